"""Prometheus metrics for a node, fed from its telemetry (``prometheus_client``).

A node publishes telemetry as JSON objects ``{"node", "kind", "t", ...}``
(kinds ``status``, ``block``, ``commit``, ``alarm``; see ``link.node``). The
exporter turns them into metrics without knowing every field in advance:

* ``status``: every numeric field ``x`` becomes the gauge ``qkd_<x>`` (rates,
  QBER, pool levels, key counts, ...), or ``qkd_status_<x>`` where ``qkd_<x>``
  is one of the counters below (``blocks``, ``secret_bits``);
* ``block``: the counter ``qkd_blocks_total{result="ok"|"aborted"}``, the
  counter ``qkd_secret_bits_total``, and each numeric field ``x`` of the last
  block as the gauge ``qkd_last_block_<x>`` (QBER, f, leaked bits, ...);
* ``alarm``: the counter ``qkd_alarms_total{kind}``;
* ``kme``: keys served by the ETSI 014 interface, ``qkd_kme_keys_served_total{call}``.

Every metric carries the label ``node`` (alice/bob). ``serve(port)`` starts the
standard client's HTTP endpoint on 127.0.0.1 (or the given address) for
Prometheus to scrape. Nothing here ever sees key material: telemetry has none.
"""

from __future__ import annotations

import math
import re
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _metric_name(prefix: str, key: str) -> str:
    return prefix + _NAME.sub("_", key).lower()


def _numbers(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, bool):
            out[prefix + k] = float(v)
        elif isinstance(v, int | float) and math.isfinite(float(v)):
            out[prefix + k] = float(v)
        elif isinstance(v, dict):
            out.update(_numbers(v, prefix + k + "_"))
    return out


class MetricsExporter:
    """Telemetry -> Prometheus metrics, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self._lock = threading.Lock()
        r = self.registry
        self.blocks = Counter("qkd_blocks", "blocks finished, by result", ["node", "result"], registry=r)
        self.secret_bits = Counter("qkd_secret_bits", "secret key bits produced", ["node"], registry=r)
        self.alarms = Counter("qkd_alarms", "alarms raised, by kind", ["node", "kind"], registry=r)
        self.kme_keys = Counter("qkd_kme_keys_served", "keys delivered to applications (ETSI 014)",
                                ["node", "call"], registry=r)
        self._server = None
        self.port: int | None = None
        self._counter_names = {"qkd_blocks", "qkd_secret_bits", "qkd_alarms", "qkd_kme_keys_served"}

    def _gauge(self, name: str, doc: str) -> Gauge:
        g = self._gauges.get(name)
        if g is None:
            g = Gauge(name, doc, ["node"], registry=self.registry)
            self._gauges[name] = g
        return g

    def observe(self, msg: dict) -> None:
        """Update the metrics from one telemetry object."""
        node = str(msg.get("node", ""))
        kind = msg.get("kind")
        skip = {"t", "node", "kind"}
        with self._lock:
            if kind == "status":
                for k, v in _numbers({k: v for k, v in msg.items() if k not in skip}).items():
                    name = _metric_name("qkd_", k)
                    if name in self._counter_names:  # e.g. status "blocks" vs the counter qkd_blocks
                        name = _metric_name("qkd_status_", k)
                    self._gauge(name, f"node status field {k}").labels(node).set(v)
            elif kind == "block":
                # the engine's block objects say "aborted" (link.node.BlockResult)
                ok = not msg["aborted"] if "aborted" in msg else bool(msg.get("ok", False))
                self.blocks.labels(node, "ok" if ok else "aborted").inc()
                bits = msg.get("secret_bits", msg.get("ell", 0))
                if ok and isinstance(bits, int | float) and bits > 0:
                    self.secret_bits.labels(node).inc(float(bits))
                for k, v in _numbers({k: v for k, v in msg.items() if k not in skip}).items():
                    self._gauge(_metric_name("qkd_last_block_", k), f"last block's {k}").labels(node).set(v)
            elif kind == "alarm":
                self.alarms.labels(node, str(msg.get("alarm", "unknown"))).inc()
            elif kind == "kme":
                for call in ("enc_keys", "dec_keys"):
                    n = msg.get(call)
                    if isinstance(n, int) and n > 0:
                        self.kme_keys.labels(node, call).inc(n)

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Start the HTTP endpoint; returns the port it listens on."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        self.port = int(server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
