"""One interface per device class, with units in every name.

What it is for: the link engine and the calibration routines program against
these protocols, never against a vendor driver, so a lab file can swap an
ID900 for a HydraHarp (or a real instrument for its emulated twin) without a
code change.  Concrete drivers live beside this module (``idq_id900.py``,
``picoquant.py``, ``qrng.py``, and the AWG/detector/polarization drivers).

What it must not do: carry QKD protocol logic (drivers know nothing of BB84;
DESIGN "Layout"), or I/O.

Why ``typing.Protocol`` (``runtime_checkable``): structural typing lets the
emulated instruments, test doubles and vendor drivers satisfy an interface
without inheriting from it, and ``isinstance(x, TimeTagger)`` still works as a
sanity check at configuration time (it checks method names, not signatures).

Shared conventions (from the project brief): times are int64 picoseconds;
time-tagger channel 0 is the sync (one tag per frame start) and channels 1..4
are detectors H, V, D, A (channel = detector index + 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .base import Identity

__all__ = [
    "TagBatch",
    "Instrumentlike",
    "TimeTagger",
    "PatternGenerator",
    "PhotonDetector",
    "PolarizationController",
    "RandomSource",
    "SYNC_CHANNEL",
]

SYNC_CHANNEL = 0


@dataclass
class TagBatch:
    """Time tags handed to the engine: ``t_ps`` int64 picoseconds, ``channel`` uint8, same length.

    Within a batch tags are sorted by time.  ``overflow`` is True when the
    instrument reported lost events (FIFO overrun) since the previous batch;
    ``stats`` holds counters the driver keeps (e.g. ``overflows`` records seen).
    """

    t_ps: np.ndarray
    channel: np.ndarray
    overflow: bool = False
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.t_ps.dtype != np.int64 or self.channel.dtype != np.uint8:
            raise TypeError(f"TagBatch needs int64 t_ps and uint8 channel, got {self.t_ps.dtype} "
                            f"and {self.channel.dtype}")
        if self.t_ps.shape != self.channel.shape or self.t_ps.ndim != 1:
            raise ValueError(f"t_ps {self.t_ps.shape} and channel {self.channel.shape} must be 1-D "
                             "and the same length")

    def __len__(self) -> int:
        return int(self.t_ps.shape[0])

    @classmethod
    def empty(cls) -> TagBatch:
        return cls(np.empty(0, np.int64), np.empty(0, np.uint8))


@runtime_checkable
class Instrumentlike(Protocol):
    """Lifecycle every driver offers (see ``drivers.base.Instrument``)."""

    identity: Identity | None

    def open(self) -> Identity: ...
    def close(self) -> None: ...
    def reconnect(self) -> Identity: ...
    @property
    def is_open(self) -> bool: ...


@runtime_checkable
class TimeTagger(Instrumentlike, Protocol):
    """Streams (t_ps, channel) tags of the sync and the four detectors."""

    @property
    def resolution_ps(self) -> float:
        """The time base of the tags (1 ps on the ID1000 / HydraHarp T2)."""
        ...

    def set_delay_ps(self, channel: int, delay_ps: int) -> None:
        """Add ``delay_ps`` to every tag of ``channel`` (cable-length compensation)."""
        ...

    def start_stream(self) -> None:
        """Start acquiring; tags become readable with ``read_tags``."""
        ...

    def stop_stream(self) -> None: ...

    def read_tags(self, *, max_tags: int | None = None, timeout_s: float | None = None) -> TagBatch:
        """Return the tags that arrived (possibly none) within ``timeout_s``; never blocks longer."""
        ...


@runtime_checkable
class PatternGenerator(Instrumentlike, Protocol):
    """An AWG driving Alice's intensity and polarization modulators."""

    def set_sample_rate_hz(self, sample_rate_hz: float) -> None: ...

    def upload_waveform(self, channel: int, samples: np.ndarray, *, name: str) -> None:
        """Upload normalized samples (float, -1..1) to ``channel`` as arbitrary waveform ``name``."""
        ...

    def set_amplitude_vpp(self, channel: int, amplitude_vpp: float) -> None: ...

    def set_offset_v(self, channel: int, offset_v: float) -> None: ...

    def set_output(self, channel: int, enabled: bool) -> None: ...

    def load_frame_pattern(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray, *,
                           slot_rate_hz: float) -> None:
        """Encode Alice's frame (uint8 basis/bit/intensity per slot) into the drive waveforms."""
        ...


@runtime_checkable
class PhotonDetector(Instrumentlike, Protocol):
    """A single-photon detector (ID120-class APD or an SNSPD channel set)."""

    @property
    def channels(self) -> int: ...

    def count_rates_hz(self) -> np.ndarray:
        """Current count rate per channel (float64, counts per second)."""
        ...

    def set_dead_time_ns(self, channel: int, dead_time_ns: float) -> None: ...

    def set_bias(self, channel: int, value: float, *, max_step: float | None = None) -> None:
        """Ramp the bias (volts for APDs, microamps for SNSPDs; the driver names its unit) to ``value``."""
        ...

    def temperature_k(self) -> float: ...


@runtime_checkable
class PolarizationController(Instrumentlike, Protocol):
    """Actuators that rotate Bob's polarization (EPC-400 voltages, MPC320 paddle angles)."""

    @property
    def actuator_unit(self) -> str:
        """"mV" for fiber squeezers, "deg" for paddles."""
        ...

    @property
    def actuator_range(self) -> tuple[float, float]: ...

    @property
    def n_actuators(self) -> int: ...

    def set_actuators(self, values: Sequence[float]) -> None:
        """Set every actuator (in ``actuator_unit``), validated against ``actuator_range``."""
        ...

    def get_actuators(self) -> np.ndarray: ...


@runtime_checkable
class RandomSource(Protocol):
    """Where Alice's bases, bits, intensities and the PA seeds come from.

    ``is_quantum`` tells whether the entropy is physical (a QRNG device) or the
    operating system's CSPRNG; reports show it.
    """

    @property
    def name(self) -> str: ...

    @property
    def is_quantum(self) -> bool: ...

    def random_bytes(self, n: int) -> np.ndarray:
        """``n`` uniformly random bytes as a uint8 array (a fresh, writable buffer)."""
        ...

    def random_words(self, n: int) -> np.ndarray:
        """``n`` uniformly random uint64 words."""
        ...

    def random_bits(self, n: int) -> np.ndarray:
        """``n`` uniform bits as uint8 0/1."""
        ...

    def choices(self, n: int, probs: Sequence[float]) -> np.ndarray:
        """``n`` indices (uint8) drawn independently with probabilities ``probs``."""
        ...
