"""Front ends for two node processes joined by an emulated fiber (the HIL model on Bob's side).

What it is for: run ``qkd alice``-style and ``qkd bob``-style nodes as separate
processes on one machine, each killable and restartable alone (issue 9's kill -9
campaign, ``bench.node_restart``), with real physics between them. Alice's
``FiberAlice`` sends each frame's pattern (the light she puts on the fiber),
numbered, on a ZeroMQ PUB socket; Bob's ``FiberBob`` receives it on a SUB
socket, runs ``hil.model.LinkModel`` on it (channel, detectors, tagger) through
``link.frontend.ModelLink`` and its slotting, and hands his node the frame's
detections under Alice's frame number.

Why PUB/SUB: like light, a frame sent while Bob is down (or before he
subscribes) is lost, not queued for later; the sender never blocks on a dead
receiver (a bounded high-water mark drops the excess). Why Alice's numbers
ride with the pattern: after either side restarts, the two must agree on frame
numbers without Bob counting sync pulses from his own start; ``FiberAlice``
implements ``set_first_frame`` so Alice's node can resume numbering above
every frame an earlier run sent (``link.resume``).

What it must not do: be used as a real link (the pattern is Alice's secret;
here it stands for the photons, which Bob's model measures and forgets), or
block Alice when Bob is gone.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import zmq

HWM_FRAMES = 16      # frames the fiber holds for a slow Bob before it drops (light does not wait)


class FiberAlice:
    """Alice's front end: emit numbered frame patterns onto the fiber (PUB, binds ``endpoint``)."""

    def __init__(self, endpoint: str, frame_slots: int, clock_hz: float, *,
                 ctx: zmq.Context | None = None) -> None:
        self.frame_slots, self.clock_hz = int(frame_slots), float(clock_hz)
        self._sock = (ctx or zmq.Context.instance()).socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, HWM_FRAMES)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        self.next_frame = 0
        self.sent = 0

    def set_first_frame(self, frame: int) -> None:
        """Number the next emitted frame ``frame`` (Alice's node resumes above earlier runs)."""
        if frame < 0:
            raise ValueError(f"frame: must be >= 0, got {frame}")
        self.next_frame = int(frame)

    def emit(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> None:
        for name, a in (("basis", basis), ("bit", bit), ("intensity", intensity)):
            if a.dtype != np.uint8 or a.shape != (self.frame_slots,):
                raise ValueError(f"{name}: expected uint8[{self.frame_slots}], got {a.dtype}{list(a.shape)}")
        # copied into the message: the node wipes its arrays as soon as emit returns
        self._sock.send_multipart([struct.pack("<Q", self.next_frame), basis, bit, intensity])
        self.next_frame += 1
        self.sent += 1

    def close(self) -> None:
        self._sock.close(0)


class FiberBob:
    """Bob's front end: the HIL model on the patterns arriving from the fiber (SUB, connects)."""

    def __init__(self, endpoint: str, model, *, ctx: zmq.Context | None = None) -> None:
        from .frontend import ModelLink

        self.model = model
        self.frame_slots = int(model.frame_slots)
        self.clock_hz = float(model.clock_hz)
        self._ml = ModelLink(model)
        self._alice_frame: dict[int, int] = {}      # model's own frame counter -> Alice's number
        self._sock = (ctx or zmq.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, HWM_FRAMES)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(endpoint)
        self.received = 0
        self.malformed = 0

    @property
    def emulated_s(self) -> float:
        return self._ml.emulated_s

    def poll(self, timeout_s: float):
        if not self._sock.poll(int(timeout_s * 1000)):
            return self._detections()
        for _ in range(HWM_FRAMES):
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._light(parts)
        return self._detections()

    def _light(self, parts: list[bytes]) -> None:
        n = self.frame_slots
        if len(parts) != 4 or len(parts[0]) != 8 or any(len(p) != n for p in parts[1:]):
            self.malformed += 1
            return
        (f,) = struct.unpack("<Q", parts[0])
        basis, bit, inten = (np.frombuffer(p, np.uint8) for p in parts[1:])
        self._alice_frame[self._ml._next] = int(f)
        self._ml.alice.emit(basis, bit, inten)
        self.received += 1

    def _detections(self):
        out = []
        for d in self._ml.bob.poll(0.0):
            f = self._alice_frame.pop(d.frame_index, None)
            if f is not None:
                out.append(dataclasses.replace(d, frame_index=f))
        return out

    def close(self) -> None:
        self._sock.close(0)
