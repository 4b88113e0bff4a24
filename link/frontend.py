"""The nodes' optics as the link engine sees them: Alice emits frames, Bob reads detections.

Two small interfaces keep the pipeline independent of where photons come from:

* ``AliceFrontEnd.emit(basis, bit, intensity)`` plays the next frame of
  Alice's pattern (uint8 per slot, conventions of ``postproc_c.sifting``);
* ``BobFrontEnd.poll(timeout_s)`` returns the frames completed since the last
  call as ``link.slotting.FrameDetections`` (frame index, sorted slots, click
  masks).

Implementations:

* ``DriverAlice`` / ``DriverBob``: the production drivers (an AWG-class
  pattern generator; a time tagger plus ``link.slotting.Slotter``). A lab uses
  these with its real instruments, CI with the HIL rig's emulated ones
  (``hil.rig.Rig``): only the resource strings differ.
* ``ModelLink``: the physical model in this process, for benchmarks and fast
  tests; it still goes through tags and the same slotting, so only the
  instruments' wire protocols are skipped.

Timing constants (``Timing``): Bob's per-detector offsets and detection
window. On real hardware they come from timing calibration saved in the lab
file; for the emulated rig ``Timing.for_model`` derives them from the
scenario's delays, time of flight and tagger drift, which is what an exact
calibration would measure.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .frame_epoch import QUIET_S, RESEND_S
from .slotting import FrameDetections, Slotter

log = logging.getLogger(__name__)


class AliceFrontEnd(Protocol):
    frame_slots: int
    clock_hz: float

    def emit(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> None: ...

    def close(self) -> None: ...


class BobFrontEnd(Protocol):
    """Bob's detections; front ends that slot tags also expose their ``slotter`` (a
    ``link.slotting.Slotter``), whose dead-time check the node runs every block."""

    def poll(self, timeout_s: float) -> list[FrameDetections]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Timing:
    """Bob's timing constants: slot period, frame length, detector offsets, window, and the
    longest dead time of his detectors for the slotter's dead-time guard (``link.slotting``;
    0 only where no key is made: timing calibration and tests of the slotting)."""

    period_ps: float
    frame_slots: int
    offsets_ps: tuple[float, float, float, float]
    window_ps: float
    dead_time_ps: float = 0.0

    @classmethod
    def for_model(cls, model, window_fraction: float = 0.8) -> Timing:
        """Exact calibration constants of a ``hil.model.LinkModel`` (tagger clock units)."""
        rate = 1.0 + model.tagger.clock_drift_ppm * 1e-6
        offs = tuple((model.tof_ps + d.delay_ps - model.tagger.sync_delay_ps) * rate
                     for d in model.detectors)
        return cls(float(model.period_ps), int(model.frame_slots), offs,  # type: ignore[arg-type]
                   window_fraction * float(model.period_ps),
                   max(d.dead_time_ns for d in model.detectors) * 1e3 * rate)

    def slotter(self) -> Slotter:
        return Slotter(self.frame_slots, self.period_ps, self.offsets_ps, self.window_ps,
                       self.dead_time_ps)


class DriverAlice:
    """Alice's frames through a pattern-generator driver (``load_frame_pattern``).

    Frame numbers: the AWG plays frames in upload order; ``set_first_frame`` names the
    number of the next upload (``link.resume``) and, in a node, uploads wait for each
    frame epoch to be acknowledged by Bob (``link.frame_epoch``)."""

    def __init__(self, awg, frame_slots: int, clock_hz: float) -> None:
        self.awg, self.frame_slots, self.clock_hz = awg, int(frame_slots), float(clock_hz)
        self.frames = 0
        self.next_frame = 0
        self.epoch: int | None = None         # frame number of the epoch awaiting Bob's ack
        self.epochs = 0                       # epochs acknowledged
        self._lock = threading.Lock()         # one upload at a time; epochs start between uploads
        self._acked = threading.Event()
        self._acked.set()
        self._send = None
        self._stop: threading.Event | None = None

    def set_first_frame(self, frame: int) -> None:
        """Number the next uploaded frame ``frame`` (Alice's node resumes above earlier runs)."""
        if frame < 0:
            raise ValueError(f"frame: must be >= 0, got {frame}")
        with self._lock:
            self.next_frame = int(frame)

    def use_epochs(self, send, stop: threading.Event) -> None:
        """``send(frame)`` sends FRAME_EPOCH to Bob; ``stop`` ends any wait for his ack."""
        self._send, self._stop = send, stop

    def begin_epoch(self) -> int:
        """Hold uploads until Bob acknowledges that the next one is frame ``next_frame``."""
        if self._send is None:                 # not in a node with epochs: numbers as uploaded
            return self.next_frame
        with self._lock:                       # after an upload in progress: it is the old epoch's
            self._acked.clear()
            self.epoch = self.next_frame
        log.info("alice: frame epoch from frame %d, waiting for Bob", self.epoch)
        return self.epoch

    def epoch_acked(self, frame: int) -> None:
        with self._lock:
            if self.epoch is not None and frame == self.epoch and not self._acked.is_set():
                self._acked.set()
                self.epochs += 1
                log.info("alice: frame epoch %d acknowledged", frame)

    def _wait_ack(self) -> bool:
        last = float("-inf")
        while not self._acked.is_set():
            if self._stop is not None and self._stop.is_set():
                return False
            now = time.monotonic()
            if self._send is not None and self.epoch is not None and now - last >= RESEND_S:
                last = now
                try:
                    self._send(self.epoch)
                except Exception as exc:      # channel down: the next resend tries again
                    log.debug("alice: FRAME_EPOCH not sent: %s", exc)
            self._acked.wait(0.05)
        return True

    def emit(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> None:
        if len(basis) != self.frame_slots:
            raise ValueError(f"basis: a frame has {self.frame_slots} slots, got {len(basis)}")
        while True:
            with self._lock:
                if self._acked.is_set():
                    self.awg.load_frame_pattern(basis, bit, intensity, slot_rate_hz=self.clock_hz)
                    self.next_frame += 1
                    self.frames += 1
                    return
            if not self._wait_ack():
                return                         # the node is stopping: nothing uploaded

    def close(self) -> None:
        self.awg.close()


class DriverBob:
    """Bob's detections from a time-tagger driver (``read_tags``) through ``Slotter``.

    Without epochs, frames are numbered by sync count from the start of the stream. With
    epochs (``use_epochs``, in a node) every frame is dropped until Alice's first epoch is
    settled, then numbered from the epoch's first frame (``link.frame_epoch``)."""

    def __init__(self, tagger, timing: Timing) -> None:
        self.tagger = tagger
        self.slotter = timing.slotter()
        self._started = False
        self._ack = None
        self._lock = threading.Lock()
        self._pending: tuple[int, float] | None = None     # (frame, requested at)
        self._base: list | None = None          # [first frame, last old sync index, first new index]
        self._last_sync_t = float("-inf")
        self.dropped_frames = 0                 # frames outside any settled epoch
        self.epochs = 0

    def use_epochs(self, ack) -> None:
        """``ack(frame)`` sends FRAME_EPOCH_ACK; from now on frames need a settled epoch."""
        self._ack = ack

    def begin_epoch(self, frame: int) -> None:
        """Alice's next upload is frame ``frame``: drop frames until the tagger is quiet."""
        if frame < 0:
            raise ValueError(f"frame: must be >= 0, got {frame}")
        ack = None
        with self._lock:
            if self._base is not None and self._base[0] == frame:
                ack = frame                      # a resend of the settled epoch: answer again
            elif self._pending is None or self._pending[0] != frame:
                self._pending = (int(frame), time.monotonic())
                self._base = None
        if ack is not None and self._ack is not None:
            self._ack(ack)

    def poll(self, timeout_s: float) -> list[FrameDetections]:
        if not self._started:
            self.tagger.start_stream()
            self._started = True
        batch = self.tagger.read_tags(timeout_s=timeout_s)
        dets = self.slotter.push(batch.t_ps, batch.channel)
        if self._ack is None:
            return dets
        now = time.monotonic()
        if np.any(np.asarray(batch.channel) == 0):
            self._last_sync_t = now
        out, settled = [], None
        with self._lock:
            base = self._base
            for d in dets:
                if base is None or d.frame_index <= base[1]:
                    self.dropped_frames += 1
                    continue
                if base[2] is None:
                    base[2] = d.frame_index
                out.append(dataclasses.replace(d, frame_index=base[0] + d.frame_index - base[2]))
            p = self._pending
            if p is not None and now - max(self._last_sync_t, p[1]) >= QUIET_S:
                self._base = [p[0], self.slotter.last_sync_index, None]
                self._pending = None
                self.epochs += 1
                settled = p[0]
        if settled is not None:
            log.info("bob: frame epoch %d settled after sync %d", settled, self._base[1])
            self._ack(settled)
        return out

    def close(self) -> None:
        try:
            if self._started:
                self.tagger.stop_stream()
        finally:
            self.tagger.close()


class ModelLink:
    """Alice and Bob front ends over a ``hil.model.LinkModel`` in this process.

    ``alice.emit`` runs the model on the pattern; ``bob.poll`` slots the tags.
    ``results`` keeps each frame's ``FrameResult`` when ``keep_results`` (tests
    use it to compare with what the physics did, including Eve's records).
    """

    def __init__(self, model, *, timing: Timing | None = None, keep_results: bool = False,
                 max_frames_queued: int = 64) -> None:
        from hil.tagger import TagStream  # the model's own merge of overlapping frames

        self.model = model
        self.timing = timing or Timing.for_model(model)
        self.frame_slots = int(model.frame_slots)
        self.clock_hz = float(model.clock_hz)
        self.keep_results = keep_results
        self.results: list = []
        self._stream = TagStream()
        self._q: queue.Queue = queue.Queue(maxsize=max_frames_queued)
        self._next = 0
        self._lock = threading.Lock()
        self._slotter = self.timing.slotter()
        self.emulated_s = 0.0
        self.alice = _ModelAlice(self)
        self.bob = _ModelBob(self)

    def _emit(self, basis, bit, intensity) -> None:
        from hil.model import Pattern

        with self._lock:
            f = self._next
            res = self.model.run_frame(f, Pattern(basis, bit, intensity))
            t, ch = self._stream.push(res.tag_t_ps, res.tag_channel, self.model.earliest_tag_ps(f + 1))
            self._next += 1
            self.emulated_s += float(res.duration_s)
            if self.keep_results:
                self.results.append(res)
        self._q.put((t, ch))

    def _poll(self, timeout_s: float) -> list[FrameDetections]:
        try:
            t, ch = self._q.get(timeout=timeout_s)
        except queue.Empty:
            return []
        out = self._slotter.push(t, ch)
        while True:
            try:
                t, ch = self._q.get_nowait()
            except queue.Empty:
                return out
            out += self._slotter.push(t, ch)


class _ModelAlice:
    def __init__(self, link: ModelLink) -> None:
        self._link = link
        self.frame_slots = link.frame_slots
        self.clock_hz = link.clock_hz

    def emit(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> None:
        if len(basis) != self.frame_slots:
            raise ValueError(f"basis: a frame has {self.frame_slots} slots, got {len(basis)}")
        self._link._emit(basis, bit, intensity)

    def close(self) -> None:
        pass


class _ModelBob:
    def __init__(self, link: ModelLink) -> None:
        self._link = link
        self.slotter = link._slotter          # as DriverBob's: the node checks its dead time

    def poll(self, timeout_s: float) -> list[FrameDetections]:
        return self._link._poll(timeout_s)

    def close(self) -> None:
        pass
