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

import queue
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .slotting import FrameDetections, Slotter


class AliceFrontEnd(Protocol):
    frame_slots: int
    clock_hz: float

    def emit(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> None: ...

    def close(self) -> None: ...


class BobFrontEnd(Protocol):
    def poll(self, timeout_s: float) -> list[FrameDetections]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Timing:
    """Bob's timing constants: slot period, frame length, detector offsets, window."""

    period_ps: float
    frame_slots: int
    offsets_ps: tuple[float, float, float, float]
    window_ps: float

    @classmethod
    def for_model(cls, model, window_fraction: float = 0.8) -> Timing:
        """Exact calibration constants of a ``hil.model.LinkModel`` (tagger clock units)."""
        rate = 1.0 + model.tagger.clock_drift_ppm * 1e-6
        offs = tuple((model.tof_ps + d.delay_ps - model.tagger.sync_delay_ps) * rate
                     for d in model.detectors)
        return cls(float(model.period_ps), int(model.frame_slots), offs,  # type: ignore[arg-type]
                   window_fraction * float(model.period_ps))

    def slotter(self) -> Slotter:
        return Slotter(self.frame_slots, self.period_ps, self.offsets_ps, self.window_ps)


class DriverAlice:
    """Alice's frames through a pattern-generator driver (``load_frame_pattern``)."""

    def __init__(self, awg, frame_slots: int, clock_hz: float) -> None:
        self.awg, self.frame_slots, self.clock_hz = awg, int(frame_slots), float(clock_hz)
        self.frames = 0

    def emit(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> None:
        if len(basis) != self.frame_slots:
            raise ValueError(f"basis: a frame has {self.frame_slots} slots, got {len(basis)}")
        self.awg.load_frame_pattern(basis, bit, intensity, slot_rate_hz=self.clock_hz)
        self.frames += 1

    def close(self) -> None:
        self.awg.close()


class DriverBob:
    """Bob's detections from a time-tagger driver (``read_tags``) through ``Slotter``."""

    def __init__(self, tagger, timing: Timing) -> None:
        self.tagger = tagger
        self.slotter = timing.slotter()
        self._started = False

    def poll(self, timeout_s: float) -> list[FrameDetections]:
        if not self._started:
            self.tagger.start_stream()
            self._started = True
        batch = self.tagger.read_tags(timeout_s=timeout_s)
        return self.slotter.push(batch.t_ps, batch.channel)

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

    def poll(self, timeout_s: float) -> list[FrameDetections]:
        return self._link._poll(timeout_s)

    def close(self) -> None:
        pass
