"""A man-in-the-middle between two nodes' DEALER lanes, for fault-injection tests (real sockets)."""

from __future__ import annotations

import threading

import zmq


class Proxy:
    """Forward frames between two endpoints pairs, letting a test tamper with them."""

    def __init__(self, ctx, alice_eps):
        self.a = {k: ctx.socket(zmq.DEALER) for k in ("proto", "ctrl")}
        self.b = {k: ctx.socket(zmq.DEALER) for k in ("proto", "ctrl")}
        self.bob_eps = {}
        for k in ("proto", "ctrl"):
            for s in (self.a[k], self.b[k]):
                s.setsockopt(zmq.LINGER, 0)
            self.a[k].connect(alice_eps[k])
            self.b[k].bind("tcp://127.0.0.1:*")
            self.bob_eps[k] = self.b[k].getsockopt_string(zmq.LAST_ENDPOINT)
        self.tamper = None  # f(direction "a2b"/"b2a", lane, frame) -> list of frames to forward
        self.log: list[tuple[str, str, bytes]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        poller = zmq.Poller()
        socks = {}
        for k in ("proto", "ctrl"):
            socks[self.a[k]] = ("a2b", k, self.b[k])
            socks[self.b[k]] = ("b2a", k, self.a[k])
            poller.register(self.a[k], zmq.POLLIN)
            poller.register(self.b[k], zmq.POLLIN)
        while not self._stop.is_set():
            for s, _ in poller.poll(20):
                d, lane, out = socks[s]
                frame = s.recv()
                self.log.append((d, lane, frame))
                frames = [frame] if self.tamper is None else self.tamper(d, lane, frame)
                for f in frames:
                    out.send(f)

    def close(self):
        self._stop.set()
        self._t.join()
        for s in (*self.a.values(), *self.b.values()):
            s.close(0)
