"""How one KME reaches the other: key reservations over the link or over mutual TLS.

What it is for: the ``PeerKme`` half of ``link.kme``. When the master SAE's KME
hands out keys it first has the peer KME reserve the same store keys for the
slave SAE (``Kme.reserve_for_peer``). Two carriers:

* ``ChannelPeer`` (a KME started by ``qkd alice``/``qkd bob``/``qkd run``):
  the request and the answer are messages ``KME_RESERVE``/``KME_RESERVED`` on
  the *ctrl lane of the link's classical channel* (``link.channel``), so they
  carry the same Wegman–Carter tags, sequence numbers and retransmission as the
  protocol, and use the pads the key store replenishes. The ctrl lane, not the
  proto lane, because an SAE is waiting: a reservation must not queue behind
  megabytes of sifting and reconciliation traffic (the reason the lane exists).
  The node's ctrl thread hands each message to this object's worker thread
  (``Node.ctrl_handlers``), so a slow SQLite write never delays an abort.
* ``HttpsPeer`` (standalone ``qkd kme``, a process without the link's
  channel): ``POST /kme/v1/reserve`` on the peer KME's HTTPS server with the
  KME certificate as client certificate (mutual TLS; ``qkd pki`` issues KME
  certificates for server and client use), and the peer's server
  certificate's CN checked against the configured peer KME ID.

Only key IDs, store IDs, sizes and SAE IDs cross; never key material. A
request that gets no answer in ``timeout_s`` fails (the SAE gets 503); the
reservation is idempotent (``link.kme.derive_key_id``), so a retry after a lost
answer re-uses what the peer already reserved.

What it must not do: act on anything but an authenticated channel message or
a verified TLS peer, or log key material (there is none here to log).
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import secrets
import ssl
import threading
from pathlib import Path
from urllib.parse import urlsplit

from .kme import PEER_RESERVE_PATH, Kme, KmeError
from .messages import Message, MsgType

log = logging.getLogger(__name__)


class ChannelPeer:
    """``PeerKme`` over the node's authenticated channel (ctrl lane).

    ``attach(node)`` registers the two message types on the node; set ``kme``
    (this node's KME, which answers the peer's requests) before traffic flows.
    """

    def __init__(self, node, kme: Kme | None = None, timeout_s: float = 5.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s: must be > 0, got {timeout_s}")
        self.node = node
        self.ch = node.ch
        self.kme = kme
        self.timeout_s = float(timeout_s)
        self._waiting: dict[int, tuple[threading.Event, list]] = {}
        self._lock = threading.Lock()
        # request IDs start at a random point so a late answer to a request from before a
        # restart cannot be taken for one of ours
        self._next_id = secrets.randbits(62) + 1
        self._work: queue.Queue[Message | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=f"kme-link-{node.role}", daemon=True)
        self.counters = {"requests_sent": 0, "answers_received": 0, "timeouts": 0,
                         "requests_served": 0, "requests_refused": 0, "late_answers": 0}

    def attach(self) -> ChannelPeer:
        self.node.ctrl_handlers[MsgType.KME_RESERVE] = self._work.put
        self.node.ctrl_handlers[MsgType.KME_RESERVED] = self._on_answer
        self._thread.start()
        return self

    def close(self) -> None:
        self.node.ctrl_handlers.pop(MsgType.KME_RESERVE, None)
        self.node.ctrl_handlers.pop(MsgType.KME_RESERVED, None)
        if self._thread.is_alive():
            self._work.put(None)
            self._thread.join(5)
        with self._lock:
            for ev, _ in self._waiting.values():
                ev.set()

    # the master's side --------------------------------------------------------------------
    def reserve(self, master_sae: str, slave_sae: str, keys: list[dict]) -> None:
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            ev: threading.Event = threading.Event()
            slot: list = []
            self._waiting[rid] = (ev, slot)
        try:
            payload = json.dumps({"master": master_sae, "slave": slave_sae, "keys": keys}).encode()
            self.ch.send(MsgType.KME_RESERVE, rid, payload, lane="ctrl")
            self.counters["requests_sent"] += 1
            if not ev.wait(self.timeout_s) or not slot:
                self.counters["timeouts"] += 1
                raise TimeoutError(f"no answer from the peer KME within {self.timeout_s:g} s")
        finally:
            with self._lock:
                self._waiting.pop(rid, None)
        answer = slot[0]
        if not answer.get("ok"):
            raise KmeError(503, f"peer KME refused the reservation: {answer.get('message', '?')}")

    def _on_answer(self, m: Message) -> None:
        try:
            answer = json.loads(m.payload)
        except ValueError:
            answer = {"ok": False, "message": "unreadable answer"}
        with self._lock:
            waiter = self._waiting.get(m.block_id)
        if waiter is None:
            self.counters["late_answers"] += 1
            return
        self.counters["answers_received"] += 1
        waiter[1].append(answer)
        waiter[0].set()

    # the peer's side ----------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            m = self._work.get()
            if m is None:
                return
            answer = self._handle(m)
            try:
                self.ch.send(MsgType.KME_RESERVED, m.block_id, json.dumps(answer).encode(), lane="ctrl")
            except Exception as exc:  # noqa: BLE001 - the master times out and its SAE retries
                log.warning("KME reservation answer not sent: %s", exc)

    def _handle(self, m: Message) -> dict:
        if self.kme is None:
            self.counters["requests_refused"] += 1
            return {"ok": False, "status": 503, "message": "no KME on this node"}
        try:
            req = json.loads(m.payload)
            self.kme.reserve_for_peer(str(req["master"]), str(req["slave"]), list(req["keys"]))
        except KmeError as exc:
            self.counters["requests_refused"] += 1
            return {"ok": False, "status": exc.status, "message": exc.message}
        except KeyError as exc:  # a store key this node does not hold (yet): not committed here
            self.counters["requests_refused"] += 1
            return {"ok": False, "status": 503, "message": f"store key {exc} not available here"}
        except (ValueError, TypeError) as exc:
            self.counters["requests_refused"] += 1
            return {"ok": False, "status": 400, "message": f"malformed reservation: {exc}"}
        except Exception as exc:  # noqa: BLE001 - e.g. KeyStoreIOError (store locked, disk full)
            # Raised out of here it ended the worker thread: this node answered no reservation
            # again until restarted, and every master request at the peer timed out (503).
            log.exception("KME reservation for the peer failed")
            self.counters["requests_refused"] += 1
            return {"ok": False, "status": 503, "message": f"peer KME failed: {type(exc).__name__}"}
        self.counters["requests_served"] += 1
        return {"ok": True}


class HttpsPeer:
    """``PeerKme`` over HTTPS with mutual TLS to the peer KME's server."""

    def __init__(self, url: str, peer_kme_id: str, cert: Path, key: Path, ca: Path,
                 timeout_s: float = 5.0) -> None:
        u = urlsplit(url)
        if u.scheme != "https" or not u.hostname:
            raise ValueError(f"url: expected https://HOST:PORT, got {url!r}")
        self.host, self.port = u.hostname, u.port or 443
        self.peer_kme_id = peer_kme_id
        self.timeout_s = timeout_s
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(str(cert), str(key))

    def reserve(self, master_sae: str, slave_sae: str, keys: list[dict]) -> None:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout_s)
        try:
            conn.connect()
            cn = _common_name(conn.sock.getpeercert())  # type: ignore[union-attr]
            if cn != self.peer_kme_id:
                raise KmeError(503, f"the peer KME presented {cn!r}, expected {self.peer_kme_id!r}")
            body = json.dumps({"master_SAE_ID": master_sae, "slave_SAE_ID": slave_sae, "keys": keys})
            conn.request("POST", PEER_RESERVE_PATH, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                try:
                    msg = json.loads(data).get("message", "")
                except ValueError:
                    msg = data[:100].decode(errors="replace")
                raise KmeError(503, f"peer KME refused the reservation ({resp.status}): {msg}")
        finally:
            conn.close()


def _common_name(cert: dict | None) -> str | None:
    for rdn in (cert or {}).get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None
