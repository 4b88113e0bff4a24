"""Random sources for Alice's choices: a QRNG character device and the OS entropy source.

What it is for: the engine draws bases, bits, intensity classes and privacy
amplification seeds from a :class:`~drivers.interfaces.RandomSource`:

* :class:`OsEntropySource` (the default) reads the kernel CSPRNG
  (``/dev/urandom``, i.e. ``getrandom``; ``os.urandom`` where there is no such
  device) straight into a numpy buffer;
* :class:`QrngDevice` reads a quantum RNG's character device, e.g. an ID
  Quantique Quantis PCIe card's ``/dev/qrandom0``, with a deadline on every read.

Both pass every byte they read through the NIST SP 800-90B start-up and
continuous health tests (:mod:`drivers.rng_health`: repetition count and
adaptive proportion, samples = bytes): the first draw after construction or
:meth:`RandomSourceBase.reset_health` reads and discards 1024 start-up samples;
a failure wipes the buffer, raises :class:`RngHealthError` and latches until
``reset_health()``; an intermittent one (:mod:`drivers.rng_health`) is logged, the start-up
test re-run and the draw repeated.

What it must not do: fall back silently (a failing device raises; the caller
chooses the OS source explicitly), expand or "stretch" entropy with a
deterministic generator (numpy's ``Generator`` is not used here: it is not
quantum and not cryptographic), keep random material in immutable ``bytes``
(everything is read with ``readinto`` into a fresh numpy array the caller owns
and can wipe), or log what it read.

Why these methods: ``readinto`` on the device avoids a copy and an immutable
intermediate; ``choices`` maps 32-bit uniform words to classes by comparing
with thresholds ``floor(cumsum(p) * 2**32)`` — exact up to a probability error
below 2**-32 per class, whole-array, no per-draw Python; ``random_bits`` unpacks
bytes.  ``is_quantum`` lets reports say which kind of entropy was used.
Throughput of the OS source is measured in ``bench/test_bench_tagger.py``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import threading
import time
from collections.abc import Sequence

import numpy as np

from .errors import ConnectionLost, DriverTimeout, DriverValueError, NotConnected
from .rng_health import STARTUP_SAMPLES, HealthTests, RngHealthError, RngHealthIntermittent

__all__ = ["OsEntropySource", "QrngDevice", "RandomSourceBase", "repetition_count_cutoff",
           "repetition_count_test", "HealthTestFailure", "RngHealthError", "DEFAULT_HEALTH_ALPHA_LOG2"]

# False-positive probability of the health tests, as -log2(alpha).  SP 800-90B 4.4
# gives alpha = 2**-20 as its example and allows down to 2**-40.  The sources here
# use 2**-40: a full-entropy byte source at 2**-20 would false-alarm about once per
# 2**24 bytes (the RCT cutoff is 4 at H = 8, P(4-run) = 2**-24 per byte), i.e. every
# few seconds of Alice's draws, and each alarm stops key generation.  At 2**-40
# (cutoff 6, P = 2**-40 per byte) that is once per ~10**12 bytes.
DEFAULT_HEALTH_ALPHA_LOG2 = 40.0

log = logging.getLogger(__name__)

_LOCK_GUARD = threading.Lock()
_CHUNK = 1 << 22  # 4 MiB per read: large enough to amortize syscalls, small enough for the deadline


HealthTestFailure = RngHealthError  # the name this module used before drivers.rng_health existed


def repetition_count_cutoff(min_entropy_per_byte: float, alpha_log2: float = 40.0) -> int:
    """SP 800-90B 4.4.1: C = 1 + ceil(-log2(alpha) / H) for the repetition count test."""
    return 1 + math.ceil(alpha_log2 / min_entropy_per_byte)


def repetition_count_test(data: np.ndarray, cutoff: int, prev: tuple[int, int] = (-1, 0)
                          ) -> tuple[bool, tuple[int, int]]:
    """Vectorized SP 800-90B repetition count test on uint8 samples.

    Returns ``(passed, state)``; ``state = (last value, its run length)`` carries
    a run across calls.  Fails if any value repeats ``cutoff`` times in a row.
    """
    a = np.asarray(data, np.uint8)
    if a.size == 0:
        return True, prev
    last, run = prev
    # run-length boundaries: positions where the value changes
    change = np.flatnonzero(a[1:] != a[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [a.size])))
    if last == int(a[0]):
        lengths = lengths.copy()
        lengths[0] += run
    ok = bool(lengths.max() < cutoff)
    return ok, (int(a[-1]), int(lengths[-1]))


class RandomSourceBase:
    """The derived draws (words, bits, choices) on top of ``_fill(buffer)``."""

    name = "random"
    is_quantum = False
    health: HealthTests | None = None

    def _read(self, view: memoryview) -> None:
        """Fill ``view`` with raw bytes from the source (no health tests)."""
        raise NotImplementedError

    def _source_lock(self) -> threading.Lock:
        lock = self.__dict__.get("_fill_lock")
        if lock is None:
            with _LOCK_GUARD:
                lock = self.__dict__.setdefault("_fill_lock", threading.Lock())
        return lock

    def _fill(self, view: memoryview) -> None:
        """Raw bytes into ``view``, passed through the health tests (start-up test first).

        Serialized per source: the engine's threads share one source, and the health tests'
        state (a run or window carried between reads) must follow one stream of reads.
        """
        with self._source_lock():
            self._fill_tested(view)

    def _fill_tested(self, view: memoryview) -> None:
        h = self.health
        while True:
            if h is not None and h.failed is None and not h.started:
                probe = np.empty(STARTUP_SAMPLES, np.uint8)
                try:
                    self._read(memoryview(probe))
                    h.startup(probe)
                finally:
                    probe.fill(0)  # start-up samples are not output
            if h is not None and h.failed is not None:
                h.check(view[:0])  # raises: the failure latches until reset_health()
            self._read(view)
            if h is None:
                return
            data = np.frombuffer(view, np.uint8)
            try:
                h.check(data)
                return
            except RngHealthError as exc:
                if data.flags.writeable:
                    data[...] = 0  # do not hand out the failed output
                if not isinstance(exc, RngHealthIntermittent):
                    raise
                # at alpha a healthy source fails now and then (drivers.rng_health: intermittent
                # failures): discard, re-run the start-up test on fresh samples, draw again; a
                # second failure soon after, or one past the persistent cutoff, latches
                log.warning("%s: %s; start-up test re-run, drawing again (%d intermittent failures "
                            "so far)", self.name, exc, h.intermittent_failures)
                h.started = False

    def reset_health(self) -> None:
        """Clear a latched health-test failure; the next draw re-runs the start-up test."""
        if self.health is not None:
            self.health.reset()

    def random_bytes(self, n: int) -> np.ndarray:
        """``n`` random bytes in a fresh, writable uint8 array."""
        n = _check_count("n", n)
        out = np.empty(n, np.uint8)
        if n:
            self._fill(memoryview(out))
        return out

    def random_words(self, n: int) -> np.ndarray:
        """``n`` uniform uint64 words."""
        n = _check_count("n", n)
        out = np.empty(n, np.uint64)
        if n:
            self._fill(memoryview(out.view(np.uint8)))
        return out

    def random_bits(self, n: int) -> np.ndarray:
        """``n`` uniform bits as uint8 0/1 (bit i = bit i%8 of byte i//8, LSB first)."""
        n = _check_count("n", n)
        b = self.random_bytes((n + 7) // 8)
        bits = np.unpackbits(b, bitorder="little")[:n]
        b.fill(0)
        return bits

    def choices(self, n: int, probs: Sequence[float]) -> np.ndarray:
        """``n`` independent class indices (uint8) with probabilities ``probs`` (2..255 classes).

        Class k is chosen when a uniform 32-bit word falls in
        ``[floor(P_k * 2**32), floor(P_{k+1} * 2**32))`` with ``P`` the cumulative
        sums; each class probability is exact to within 2**-32.
        """
        n = _check_count("n", n)
        p = np.asarray(probs, np.float64)
        if p.ndim != 1 or not 2 <= p.size <= 255:
            raise DriverValueError(f"probs must list 2..255 probabilities, got shape {p.shape}")
        if not np.all(np.isfinite(p)) or (p < 0).any() or abs(p.sum() - 1.0) > 1e-9:
            raise DriverValueError(f"probs must be finite, >= 0 and sum to 1, got {p.tolist()}")
        thresholds = np.floor(np.cumsum(p)[:-1] * 2.0**32).astype(np.uint64)
        w = np.empty(n, np.uint32)
        if n:
            self._fill(memoryview(w.view(np.uint8)))
        out = np.zeros(n, np.uint8)
        for thr in thresholds:
            if thr >= 2**32:
                continue
            out += w >= np.uint32(thr)
        w.fill(0)
        return out


def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DriverValueError(f"{name} must be a non-negative integer, got {n!r}")
    return int(n)


class OsEntropySource(RandomSourceBase):
    """The operating system's CSPRNG (``/dev/urandom``; ``os.urandom`` elsewhere). Not quantum."""

    name = "os-entropy"
    is_quantum = False

    def __init__(self, path: str = "/dev/urandom", *, min_entropy_per_byte: float = 8.0,
                 health_tests: bool = True, alpha_log2: float = DEFAULT_HEALTH_ALPHA_LOG2):
        self.path = path
        self._f = None
        # The kernel CSPRNG's output is conditioned (full entropy, H = 8 per byte); the tests
        # catch a broken or replaced device (zeros, a stuck or biased stream), not weak entropy.
        self.health = (HealthTests(min_entropy_per_byte, alpha_log2=alpha_log2, name=f"os-entropy@{path}")
                       if health_tests else None)

    def _read(self, view: memoryview) -> None:
        if self._f is None:
            try:
                self._f = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open for speed
            except OSError:
                self._f = False
        if self._f:
            pos, n = 0, len(view)
            while pos < n:
                got = self._f.readinto(view[pos:pos + _CHUNK])
                if not got:
                    raise ConnectionLost(f"{self.path} returned no data", instrument=self.name)
                pos += got
        else:  # no device file (non-Linux): os.urandom, copied into the caller's buffer
            for pos in range(0, len(view), _CHUNK):
                chunk = view[pos:pos + _CHUNK]
                chunk[:] = os.urandom(len(chunk))

    def close(self) -> None:
        if self._f:
            self._f.close()
        self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class QrngDevice(RandomSourceBase):
    """A QRNG character device (Quantis PCIe ``/dev/qrandom0``, or any device/FIFO that streams bytes).

    ``open()`` opens it non-blocking; every read waits at most ``timeout_s``
    for data (a stalled device raises :class:`DriverTimeout`, never hangs);
    EOF raises :class:`ConnectionLost`.  Each read passes the SP 800-90B
    health tests for ``min_entropy_per_byte`` (see :mod:`drivers.rng_health`)
    or raises :class:`RngHealthError`; the first draw consumes 1024 start-up samples.
    """

    name = "qrng"
    is_quantum = True

    def __init__(self, path: str = "/dev/qrandom0", *, timeout_s: float = 2.0,
                 min_entropy_per_byte: float = 7.0, health_tests: bool = True,
                 alpha_log2: float = DEFAULT_HEALTH_ALPHA_LOG2):
        if not (timeout_s > 0):
            raise DriverValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not 0 < min_entropy_per_byte <= 8:
            raise DriverValueError(f"min_entropy_per_byte must be in (0, 8], got {min_entropy_per_byte!r}")
        self.path = path
        self.timeout_s = float(timeout_s)
        self.health_tests = health_tests
        self._fd: int | None = None
        self.name = f"QRNG@{path}"
        self.health = (HealthTests(min_entropy_per_byte, alpha_log2=alpha_log2, name=self.name)
                       if health_tests else None)
        self.rct_cutoff = repetition_count_cutoff(min_entropy_per_byte, alpha_log2)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        if self._fd is not None:
            return
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise ConnectionLost(f"cannot open {self.path}: {e.strerror}", instrument=self.name,
                                 command="<open>") from None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def reconnect(self) -> None:
        self.close()
        self.open()

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self, view: memoryview) -> None:
        if self._fd is None:
            raise NotConnected("not open (call open())", instrument=self.name, command="<read>")
        n, pos = len(view), 0
        deadline = time.monotonic() + self.timeout_s
        while pos < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DriverTimeout(f"device delivered {pos} of {n} bytes within {self.timeout_s:g} s",
                                    instrument=self.name, command="<read>")
            r, _, _ = select.select([self._fd], [], [], remaining)
            if not r:
                continue
            try:
                got = os.readv(self._fd, [view[pos:pos + _CHUNK]])
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise ConnectionLost(f"read failed: {e.strerror}", instrument=self.name,
                                     command="<read>") from None
            if got == 0:
                raise ConnectionLost("device returned end of file", instrument=self.name, command="<read>")
            pos += got
