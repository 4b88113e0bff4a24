"""Services that ride on a running node: its KME, its metrics endpoint, a telemetry log.

What it is for: what ``qkd alice``/``qkd bob``/``qkd run`` start next to the
link engine when the node file (or a flag) asks for them, and what ``qkd kme``
starts on its own:

* ``start_kme``: the node's ETSI GS QKD 014 KME (``link.kme``) over its key
  store, reserving keys at the peer over the link's authenticated channel
  (``link.kme_link.ChannelPeer``), or over mutual TLS when it runs without a
  node (``HttpsPeer``, standalone ``qkd kme``);
* ``start_metrics``: the Prometheus endpoint (``link.metrics``) fed from the
  nodes' telemetry;
* ``TelemetryLog``: every telemetry object as one JSON line (what
  ``qkd report --run`` reads back).

All three listen to telemetry through ``add_listener`` (a node's ``on_event``
fan-out), so the engine needs no knowledge of them.

What it must not do: touch key material beyond handing the store to the KME,
or keep a service running after its ``close()``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import KmeSettings, MetricsSettings
from .kme import Kme, KmeConfig, KmeServer, ReservationStore, server_ssl_context
from .kme_link import ChannelPeer, HttpsPeer
from .metrics import MetricsExporter

log = logging.getLogger(__name__)


def add_listener(node, fn: Callable[[dict], None]) -> None:
    """Have ``fn(msg)`` called with each of ``node``'s telemetry objects (after earlier ones)."""
    prev = node.on_event

    def fan_out(msg: dict) -> None:
        if prev is not None:
            prev(msg)
        try:
            fn(msg)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the node's thread
            log.exception("telemetry listener %r failed", fn)

    node.on_event = fan_out


def kme_config(s: KmeSettings, master_share: int | None) -> KmeConfig:
    return KmeConfig(s.kme_id, s.peer_kme_id, tuple(s.saes), dict(s.saes), master_share=master_share,
                     **s.limits)


# a node's half of the store it hands out as master (KeyStore.peek share): disjoint halves,
# so SAEs at both sites may act as masters at the same time
MASTER_SHARE = {"alice": 0, "bob": 1}


@dataclass
class KmeHandle:
    kme: Kme
    server: KmeServer
    reservations: ReservationStore
    peer: ChannelPeer | HttpsPeer | None

    @property
    def url(self) -> str:
        return f"https://{self.server.host}:{self.server.port}"

    def close(self) -> None:
        self.server.stop()
        if isinstance(self.peer, ChannelPeer):
            self.peer.close()
        self.reservations.close()


def start_kme(settings: KmeSettings, store, role: str, node=None) -> KmeHandle:
    """Start a KME over ``store``; with ``node`` its peer is reached over the node's channel.

    Without a node the peer is ``settings.peer_url`` (mutual TLS), or none (then
    enc_keys answers 503 and only dec_keys of reservations made earlier works).
    """
    peer: ChannelPeer | HttpsPeer | None
    if node is not None:
        peer = ChannelPeer(node, timeout_s=settings.timeout_s)
    elif settings.peer_url:
        peer = HttpsPeer(settings.peer_url, settings.peer_kme_id, settings.cert, settings.key, settings.ca,
                         timeout_s=settings.timeout_s)
    else:
        peer = None
    reservations = ReservationStore(settings.reservations)
    kme = Kme(kme_config(settings, MASTER_SHARE[role]), store, reservations, peer)
    if isinstance(peer, ChannelPeer):
        peer.kme = kme
        peer.attach()
        kme.on_event = lambda ev: node.publish("kme", **{k: v for k, v in ev.items() if k != "kind"})
    server = KmeServer(kme, server_ssl_context(settings.cert, settings.key, settings.ca),
                       host=settings.host, port=settings.port)
    try:
        server.start()
    except BaseException:
        if isinstance(peer, ChannelPeer):
            peer.close()
        reservations.close()
        raise
    return KmeHandle(kme, server, reservations, peer)


def start_metrics(nodes, settings: MetricsSettings) -> MetricsExporter:
    """One Prometheus endpoint for ``nodes`` (label ``node``); returns the exporter (``.port``)."""
    ex = MetricsExporter()
    for n in nodes:
        add_listener(n, ex.observe)
    ex.serve(settings.port, settings.addr)
    return ex


class TelemetryLog:
    """Telemetry objects appended to a file as JSON lines (thread safe)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def write(self, msg: dict) -> None:
        line = json.dumps(msg, default=_jsonable)
        with self._lock:
            if not self._f.closed:
                self._f.write(line + "\n")

    def attach(self, nodes) -> TelemetryLog:
        for n in nodes:
            add_listener(n, self.write)
        return self

    def close(self) -> None:
        with self._lock:
            self._f.close()


def _jsonable(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


LAB_KMES = {"alice": ("KME_A", "KME_B", "SAE_A", "SAE_B"), "bob": ("KME_B", "KME_A", "SAE_B", "SAE_A")}


def run_services(workdir, *, kme: bool = False, metrics_port: int | None = None,
                 telemetry_log: bool = False, say: Callable[[str], None] | None = None):
    """``qkd run``'s ``attach`` hook for ``link.pipeline.run_local`` (None if nothing is asked).

    ``kme``: both nodes' KMEs on free ports of 127.0.0.1, with a lab PKI
    (KME_A/KME_B, SAE_A/SAE_B) made in ``workdir/pki`` unless there; the
    reservation stores are ``workdir/<role>-kme.db``. ``metrics_port``: one
    Prometheus endpoint for both nodes. ``telemetry_log``:
    ``workdir/telemetry.jsonl``. ``say`` is told each service's address.
    """
    if not kme and metrics_port is None and not telemetry_log:
        return None
    d = Path(workdir) if workdir is not None else None
    if (kme or telemetry_log) and d is None:
        raise ValueError("workdir: the KME's certificates and the telemetry log need a folder")
    tell = say or (lambda line: None)

    def attach(nodes: dict) -> Callable[[], None]:
        closers: list[Callable[[], None]] = []
        try:
            if telemetry_log:
                closers.append(TelemetryLog(d / "telemetry.jsonl").attach(nodes.values()).close)
            if metrics_port is not None:
                ex = start_metrics(nodes.values(), MetricsSettings(metrics_port))
                closers.append(ex.stop)
                tell(f"metrics: http://127.0.0.1:{ex.port}/metrics")
            if kme:
                from .pki import create_lab_pki
                pki = d / "pki"
                if not (pki / "KME_A.pem").exists():
                    create_lab_pki(pki, ["KME_A", "KME_B"], ["SAE_A", "SAE_B"])
                for role in ("alice", "bob"):
                    me, peer, sae, partner = LAB_KMES[role]
                    s = KmeSettings(me, peer, "127.0.0.1", 0, pki / f"{me}.pem", pki / f"{me}.key",
                                    pki / "ca.pem", d / f"{role}-kme.db", {sae: (partner,)})
                    h = start_kme(s, nodes[role].store, role, node=nodes[role])
                    closers.append(h.close)
                    tell(f"KME {me} ({role}): {h.url}/api/v1/keys/{partner}/enc_keys for {sae} "
                         f"(certificates in {pki})")
        except BaseException:
            close_all(closers)
            raise
        return lambda: close_all(closers)

    return attach


def close_all(closers: list[Callable[[], None]]) -> None:
    for c in reversed(closers):
        try:
            c()
        except Exception:  # noqa: BLE001 - close the others anyway
            log.exception("closing a node service failed")
