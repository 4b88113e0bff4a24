"""The HIL rig: every emulated instrument of both nodes, joined by one physical model.

``Rig(scenario, seed).start()`` starts, on 127.0.0.1 and free ports (serial
twins on pseudo-terminals):

* Alice's pattern generator: the emulated Keysight 33500-series AWG. Each
  pattern the production AWG driver uploads and plays is one frame of the
  link: the rig decodes it (``hil.emulated.awg``) and runs the physical model
  (``hil.model.LinkModel.run_frame``) on it, frames numbered in upload order;
* Bob's time tagger: an emulated PicoQuant HydraHarp streaming T2 records,
  fed with the model's tags merged into one time-ordered stream
  (``hil.tagger.TagStream``), so the production PicoQuant driver reads them;
* Bob's polarization controllers (EPC-400 and MPC320 on ptys; the one named
  by ``controller`` rotates the model's polarization), his SNSPD controller
  and an ID120 monitor detector, wired to the model (``hil.emulated.wiring``).

The model keeps its own clock: the rig runs as fast as the model and the
instrument round trips allow, never in wall-clock time, and ``stats`` gives
both the emulated and the wall-clock duration so rates can be reported per
emulated second and per wall-clock second (DESIGN, "HIL").

Back-pressure: frames wait in a bounded queue between the AWG (Alice) and the
model, and tag batches in a bounded queue between the model and the tagger
stream, so a slow reader slows Alice's uploads instead of growing memory.
Once a reader has connected, tags the model produces while none is connected
(Bob's node restarting) are dropped and counted in ``stats.unread_tags``, as a
real tagger streams on without a reader: Alice's AWG never stalls on a dead Bob.

The frame length is the scenario's, capped by the emulated AWG's memory (four
samples a slot, ``max_points``): a rig frame is ``rig.frame_slots`` slots and
Alice's node must upload patterns of exactly that length. This module uses
nothing of ``link``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivers.keysight_awg import FrameEncoding

from .emulated.lab import start_emulated_lab
from .emulated.picoquant import PicoQuantT2Server
from .emulated.wiring import wire_awg, wire_epc400, wire_mpc320
from .model import FrameResult, LinkModel, Pattern
from .scenario import Scenario
from .tagger import TagStream

log = logging.getLogger(__name__)

DEFAULT_RIG_FRAME_SLOTS = 1 << 18
# The emulated tagger's acquisition starts this long before Alice's first frame,
# so sync jitter at frame 0 never gives a negative timestamp.
TAGGER_START_PS = 1_000_000
# One sample per slot: Alice's AWG driver must use the same encoding.
RIG_ENCODING = FrameEncoding(samples_per_slot=1, pulse_samples=1)


@dataclass
class RigStats:
    frames: int = 0
    detections: int = 0
    tags: int = 0
    lost_tags: int = 0
    emulated_s: float = 0.0
    model_wall_s: float = 0.0
    started_wall: float = field(default_factory=time.monotonic)
    pattern_errors: int = 0
    unread_tags: int = 0       # streamed while no reader was connected (after the first)

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.started_wall


class Rig:
    """Both nodes' emulated instruments for one scenario (see the module docstring).

    ``keep_results`` keeps every ``FrameResult`` (with what Eve learned) in
    ``results`` for tests that compare the link's output with the physics.
    """

    def __init__(self, scenario: str | Path | Scenario | None = None, seed: int = 1, *,
                 frame_slots: int | None = None, controller: str = "epc400",
                 keep_results: bool = False, queue_frames: int = 8) -> None:
        sc = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
        slots = frame_slots or min(int(sc.source.frame_slots), DEFAULT_RIG_FRAME_SLOTS)
        if slots != int(sc.source.frame_slots):
            sc = sc.with_overrides({"source.frame_slots": slots})
        if controller not in ("epc400", "mpc320"):
            raise ValueError(f"controller: expected 'epc400' or 'mpc320', got {controller!r}")
        self.scenario = sc
        self.seed = seed
        self.controller = controller
        self.model = LinkModel(sc, seed)
        self.frame_slots = self.model.frame_slots
        self.keep_results = keep_results
        self.results: list[FrameResult] = []
        self.stats = RigStats()
        self._frames: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._tags: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._stream = TagStream()
        self._next_frame = 0
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.lab = None
        self.tagger: PicoQuantT2Server | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Rig:
        try:
            self.lab = start_emulated_lab()
            awg = self.lab.servers["alice.pattern_generator"]
            # A 1 GHz slot clock needs a 1 GSa/s AWG at one sample a slot: the
            # twin presents itself as a 33622A (1 GSa/s) with that encoding.
            awg.model = "33622A"
            awg.frame_encoding = RIG_ENCODING
            awg.max_points = max(int(getattr(awg, "max_points", 0)), self.frame_slots)
            wire_awg(awg, self._on_pattern)
            if self.controller == "epc400":
                wire_epc400(self.lab.servers["bob.polarization"], self.model)
            else:
                wire_mpc320(self.lab.servers["bob.paddles"], self.model)
            self.tagger = PicoQuantT2Server(self._next_tags, name="bob.time_tagger").start()
            self._worker = threading.Thread(target=self._run, name="hil-rig-model", daemon=True)
            self._worker.start()
        except BaseException:
            self.stop()
            raise
        log.info("HIL rig up: scenario %s, seed %d, %d slots per frame", self.scenario.name,
                 self.seed, self.frame_slots)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(10)
            self._worker = None
        if self.tagger is not None:
            self.tagger.stop()
            self.tagger = None
        if self.lab is not None:
            self.lab.stop()
            self.lab = None

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the nodes' lab file needs ----------------------------------------------
    def resources(self) -> dict[str, str]:
        """Instrument key ("alice.pattern_generator", "bob.time_tagger", ...) -> resource string."""
        if self.lab is None or self.tagger is None:
            raise RuntimeError("rig is not started")
        res = dict(self.lab.resources)
        res["bob.time_tagger"] = self.tagger.address
        return res

    def lab_toml(self) -> str:
        """A lab file naming the running twins (``qkd devices check --config``, and the
        ``[frontend] lab`` of ``qkd alice``/``qkd bob``): it includes the AWG's one sample a
        slot (``RIG_ENCODING``), without which Alice's driver would ask the twin for 4 GSa/s."""
        assert self.lab is not None and self.tagger is not None
        enc = RIG_ENCODING
        return (self.lab.lab_toml()
                + "\n[alice.pattern_generator.settings.encoding]\n"
                  f"samples_per_slot = {enc.samples_per_slot}\npulse_samples = {enc.pulse_samples}\n"
                + f'\n[bob.time_tagger]\ndriver = "picoquant_stream"\n'
                  f'resource = "{self.tagger.address}"\n')

    def timing(self) -> dict:
        """Nominal timing of the link (slot period, frame, clock) for the nodes' set-up."""
        m = self.model
        return {"clock_hz": m.clock_hz, "period_ps": m.period_ps, "frame_slots": m.frame_slots}

    # -- the pipe: AWG -> model -> tagger -----------------------------------------------
    def _on_pattern(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray,
                    slot_rate_hz: float) -> None:
        # Runs in the AWG server's thread: blocking here slows Alice's driver (back-pressure).
        if len(basis) != self.frame_slots:
            self.stats.pattern_errors += 1
            log.error("AWG pattern of %d slots ignored: the rig's frames have %d", len(basis),
                      self.frame_slots)
            return
        pat = Pattern(basis.astype(np.uint8, copy=True), bit.astype(np.uint8, copy=True),
                      intensity.astype(np.uint8, copy=True))
        while not self._stop.is_set():
            try:
                self._frames.put(pat, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pat = self._frames.get(timeout=0.05)
            except queue.Empty:
                continue
            f = self._next_frame
            t0 = time.monotonic()
            res = self.model.run_frame(f, pat)
            t, ch = self._stream.push(res.tag_t_ps, res.tag_channel, self.model.earliest_tag_ps(f + 1))
            t = t + TAGGER_START_PS  # the tagger's clock starts before the first sync (no negative times)
            self.stats.model_wall_s += time.monotonic() - t0
            self._next_frame += 1
            self.stats.frames += 1
            self.stats.detections += int(len(res.slot))
            self.stats.tags += int(len(t))
            self.stats.lost_tags += int(res.lost_tags)
            self.stats.emulated_s += float(res.duration_s)
            if self.keep_results:
                self.results.append(res)
            tg = self.tagger
            if tg is not None and tg.connections > 0 and tg._conn is None:
                # Bob's reader went away (his node restarted): a real tagger keeps streaming
                # and these tags are lost, it never stalls Alice's AWG (link.frame_epoch)
                self.stats.unread_tags += int(len(t))
                continue
            while not self._stop.is_set():
                try:
                    self._tags.put((t, ch), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _next_tags(self):
        try:
            return self._tags.get(timeout=0.02)
        except queue.Empty:
            return None
