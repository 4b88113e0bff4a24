"""NIST SP 800-90B continuous and start-up health tests for a noise source, over whole buffers.

What it is for: every random source Alice draws from (the QRNG device, the OS
entropy source) passes each buffer it reads through a :class:`HealthTests`
object before anyone sees it.  A stuck source (one value repeating) trips the
Repetition Count Test; a biased source (one value too frequent) trips the
Adaptive Proportion Test.  A failure raises :class:`RngHealthError`, wipes the
buffer, and *latches*: every later check raises too until :meth:`HealthTests.reset`
(which re-arms the start-up test), so key generation stops and stays stopped.

What it must not do: estimate entropy (the claimed min-entropy ``H`` per
sample is an input, from the device's SP 800-90B assessment), repair or
whiten output, or log sample values.

Intermittent and persistent failures: at the false-positive probability ``alpha`` of a
test, a healthy source fails it once per about ``1 / alpha`` samples. Alice draws ~85 MB/s
of raw bytes on the rig (8 bytes a slot, ~40 frames of 2^18 slots a second), so at
``alpha = 2^-40`` (the smallest SP 800-90B allows) a healthy source fails the RCT about
every 3.5 hours: a node that stops on every failure cannot run overnight (a soak run
stopped Alice after 73 s this way). So each test has two cutoffs, as the Linux kernel's
jitterentropy does since its commit "crypto: jitter - permanent and intermittent health
errors" (3fde2fe, 2023), which reads SP 800-90B as allowing both kinds: reaching the
cutoff of ``alpha`` is an *intermittent* failure (:class:`RngHealthIntermittent`: the
output is discarded and the start-up test re-run on fresh samples, the caller draws
again), reaching the cutoff of ``alpha^2`` (``2 * alpha_log2``; 11 repeats at H = 8) is
*persistent* and latches, and so is a second intermittent failure within
:data:`REPEAT_WINDOW_SAMPLES` samples of the last one (a healthy source does that with
probability about ``2^30 * alpha``, 2^-10 at 2^-40). A stuck or badly biased source
therefore still latches at once, within the buffer that shows it.

Why this method: the two tests are those of SP 800-90B section 4.4 with the
cutoffs the standard derives from ``H`` and the false-positive probability
``alpha`` (section 4.4.1 and 4.4.2 formulas, cited at each function).  They are
stateful across calls (a run or a window may straddle two buffers), and both
are computed with numpy over the whole buffer: run lengths from the positions
where the value changes (RCT), and non-overlapping windows as rows of a 2-D
view compared with their first column (APT), so no Python loop runs per
sample.  ``tests/test_rng_health.py`` checks both against a literal
sample-by-sample transcription of the standard's pseudocode.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import DriverError

__all__ = ["RngHealthError", "RngHealthIntermittent", "HealthTests", "rct_cutoff", "apt_window",
           "apt_cutoff", "critbinom", "STARTUP_SAMPLES", "REPEAT_WINDOW_SAMPLES"]

# SP 800-90B 4.3 (requirement 12 of the start-up tests): the continuous tests run
# over at least 1024 consecutive samples before any output is used.
STARTUP_SAMPLES = 1024
# a second intermittent failure this soon after the last one is persistent (module docstring)
REPEAT_WINDOW_SAMPLES = 1 << 30


class RngHealthError(DriverError):
    """A noise-source health test (SP 800-90B 4.4) failed: the output was discarded, the source is failed."""


class RngHealthIntermittent(RngHealthError):
    """A test reached its ``alpha`` cutoff but not the persistent one: the output was discarded
    and the source is *not* latched; re-run the start-up test and draw again."""


def rct_cutoff(min_entropy: float, alpha_log2: float = 20.0) -> int:
    """Repetition Count Test cutoff, SP 800-90B 4.4.1: ``C = 1 + ceil(-log2(alpha) / H)``.

    With ``alpha = 2**-20`` (the standard's value) this is ``1 + ceil(20 / H)``.
    A run of ``C`` identical samples has probability ``2**(-H (C-1)) <= alpha``
    for a source that really has ``H`` bits of min-entropy per sample.
    """
    _check_entropy(min_entropy)
    return 1 + math.ceil(alpha_log2 / min_entropy)


def apt_window(binary: bool) -> int:
    """APT window size W, SP 800-90B 4.4.2: 1024 for binary sources, 512 for non-binary ones."""
    return 1024 if binary else 512


def critbinom(n: int, p: float, alpha_log2: float) -> int:
    """Excel's ``CRITBINOM(n, p, 1 - 2**-alpha_log2)``: smallest k with ``P(X <= k) >= 1 - alpha``.

    ``X ~ Binomial(n, p)``.  Computed from the upper tail ``P(X > k) <= alpha``
    summed in log space from the top, so ``alpha`` down to 2**-40 is exact to
    float rounding (``1 - alpha`` itself would lose those digits).
    """
    if not (0.0 < p < 1.0):
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    k = np.arange(n + 1, dtype=np.float64)
    lg = np.array([math.lgamma(i + 1.0) for i in range(n + 1)])
    logpmf = lg[n] - lg - lg[::-1] + k * math.log(p) + (n - k) * math.log1p(-p)
    tail = np.cumsum(np.exp(logpmf)[::-1])[::-1]  # tail[j] = P(X >= j)
    alpha = 2.0 ** -alpha_log2
    # P(X > k) = tail[k + 1]; the smallest k with that <= alpha
    above = np.append(tail[1:], 0.0)
    return int(np.flatnonzero(above <= alpha)[0])


def apt_cutoff(min_entropy: float, binary: bool, alpha_log2: float = 20.0) -> int:
    """Adaptive Proportion Test cutoff, SP 800-90B 4.4.2: ``C = 1 + CRITBINOM(W, 2**-H, 1 - alpha)``.

    W from :func:`apt_window`.  The count B starts at 1 for the window's first
    sample A and adds each of the next W-1 samples equal to A; the test fails
    when ``B >= C``.
    """
    _check_entropy(min_entropy, binary)
    w = apt_window(binary)
    return 1 + critbinom(w, 2.0 ** -min_entropy, alpha_log2)


def _check_entropy(h: float, binary: bool | None = None) -> None:
    hi = 1.0 if binary else 8.0
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not (0.0 < h <= hi):
        raise ValueError(f"min_entropy must be in (0, {hi:g}] bits per sample, got {h!r}")


class HealthTests:
    """Stateful RCT + APT (+ start-up) for one noise source whose samples are uint8 symbols.

    ``binary=True``: samples are bits (0/1 values, one per uint8), ``H <= 1``;
    otherwise samples are bytes, ``H <= 8``.  ``check(samples)`` tests the next
    samples of the stream; ``startup(samples)`` tests the first
    :data:`STARTUP_SAMPLES` (or more) after power-up or :meth:`reset`.
    """

    def __init__(self, min_entropy: float, *, binary: bool = False, alpha_log2: float = 20.0,
                 name: str = "random source"):
        _check_entropy(min_entropy, binary)
        if not (20.0 <= alpha_log2 <= 40.0):
            # SP 800-90B 4.4 recommends 2**-40 <= alpha <= 2**-20
            raise ValueError(f"alpha_log2 must be in [20, 40], got {alpha_log2!r}")
        self.min_entropy = float(min_entropy)
        self.binary = bool(binary)
        self.alpha_log2 = float(alpha_log2)
        self.name = name
        self.rct_cutoff = rct_cutoff(min_entropy, alpha_log2)
        self.apt_window = apt_window(binary)
        self.apt_cutoff = apt_cutoff(min_entropy, binary, alpha_log2)
        # persistent cutoffs: those of alpha^2 (module docstring)
        self.rct_cutoff_persistent = rct_cutoff(min_entropy, 2 * alpha_log2)
        self.apt_cutoff_persistent = apt_cutoff(min_entropy, binary, 2 * alpha_log2)
        self.intermittent_failures = 0
        self.total_samples = 0                      # not cleared by reset()
        self._last_intermittent: int | None = None  # total_samples at the last one
        self.reset()

    def reset(self) -> None:
        """Clear the failure latch and all state; the start-up test must pass again."""
        self.failed: str | None = None
        self.started = False
        self.samples_tested = 0
        self._rct_last, self._rct_run = -1, 0
        self._apt_a, self._apt_b, self._apt_pos = -1, 0, 0  # window's A, count B, samples seen in window

    def startup(self, samples: np.ndarray) -> None:
        """SP 800-90B 4.3: run the continuous tests over >= 1024 fresh samples before use."""
        a = np.asarray(samples)
        if a.size < STARTUP_SAMPLES:
            raise ValueError(f"start-up test needs >= {STARTUP_SAMPLES} samples, got {a.size}")
        self.reset()
        self._run(a, "start-up test: ")
        self.started = True

    def check(self, samples: np.ndarray) -> None:
        """Test the next samples of the stream; raise :class:`RngHealthError` (and latch) on failure."""
        if self.failed is not None:
            raise RngHealthError(f"source failed earlier ({self.failed}); reset() and re-run the "
                                 "start-up test", instrument=self.name, command="<health>")
        if not self.started:
            raise RngHealthError("start-up test has not run", instrument=self.name, command="<health>")
        self._run(np.asarray(samples), "")

    def _run(self, a: np.ndarray, prefix: str) -> None:
        if a.dtype != np.uint8 or a.ndim != 1:
            a = np.ascontiguousarray(a, dtype=np.uint8).reshape(-1)
        if self.binary and a.size and a.max() > 1:
            raise ValueError("binary health tests take samples 0/1")
        longest, worst = self._rct(a), self._apt(a)
        self.samples_tested += a.size
        self.total_samples += a.size
        if longest >= self.rct_cutoff:
            reason = (f"repetition count test failed: a sample value repeated {longest} times in a row "
                      f"(cutoff {self.rct_cutoff} for H = {self.min_entropy:g} bits/sample, "
                      f"alpha = 2^-{self.alpha_log2:g})")
        elif worst >= self.apt_cutoff:
            reason = (f"adaptive proportion test failed: one value took {worst} of a "
                      f"{self.apt_window}-sample window (cutoff {self.apt_cutoff} for "
                      f"H = {self.min_entropy:g} bits/sample, "
                      f"alpha = 2^-{self.alpha_log2:g})")
        else:
            return
        persistent = longest >= self.rct_cutoff_persistent or worst >= self.apt_cutoff_persistent
        if persistent:
            reason += (f"; beyond the persistent cutoff ({self.rct_cutoff_persistent} repeats, "
                       f"{self.apt_cutoff_persistent} of a window)")
        elif self._last_intermittent is not None and \
                self.total_samples - self._last_intermittent < REPEAT_WINDOW_SAMPLES:
            persistent = True
            reason += (f"; a second failure {self.total_samples - self._last_intermittent} samples "
                       f"after the last one (persistent)")
        if prefix or persistent:        # a start-up test must pass outright
            self.failed = prefix + reason
            raise RngHealthError(self.failed + "; output discarded", instrument=self.name,
                                 command="<health>")
        self.intermittent_failures += 1
        self._last_intermittent = self.total_samples
        raise RngHealthIntermittent(f"intermittent {reason}; output discarded", instrument=self.name,
                                    command="<health>")

    def _rct(self, a: np.ndarray) -> int:
        # SP 800-90B 4.4.1: fail when one value repeats C times in a row.  Runs are found
        # from the (sparse, for a healthy source) positions i with a[i+1] == a[i]: a group
        # of g consecutive such positions is a run of g + 1 samples.  The run at the start
        # continues the previous buffer's last run.
        n = a.size
        if n == 0:
            return 0
        idx = np.flatnonzero(a[1:] == a[:-1])
        if idx.size:
            brk = np.flatnonzero(np.diff(idx) != 1)
            starts = np.concatenate(([0], brk + 1))
            ends = np.concatenate((brk + 1, [idx.size]))
            runs = ends - starts + 1
            head = int(runs[0]) if idx[0] == 0 else 1
            tail = int(runs[-1]) if idx[-1] == n - 2 else 1
            longest = int(runs.max())
        else:
            head = tail = longest = 1
        if int(a[0]) == self._rct_last:
            if head == n:  # the whole buffer continues the previous run
                tail = head + self._rct_run
            head += self._rct_run
            longest = max(longest, head)
        self._rct_last, self._rct_run = int(a[-1]), tail
        return longest

    def _apt(self, a: np.ndarray) -> int:
        # SP 800-90B 4.4.2: non-overlapping windows of W samples; A = first sample of the
        # window, B = how many of the W samples equal A; fail when B >= C.  B only grows
        # within a window, so testing it at buffer ends finds every failure the
        # sample-by-sample loop finds.
        w = self.apt_window
        worst = 0
        pos = 0
        if self._apt_pos and a.size:  # finish the window left open by the previous buffer
            take = min(w - self._apt_pos, a.size)
            self._apt_b += int(np.count_nonzero(a[:take] == self._apt_a))
            self._apt_pos += take
            worst = self._apt_b
            if self._apt_pos == w:
                self._apt_pos = 0
            pos = take
        rest = a[pos:]
        full = rest.size // w
        if full:
            win = rest[:full * w].reshape(full, w)
            counts = (win == win[:, :1]).sum(axis=1, dtype=np.int32)
            worst = max(worst, int(counts.max()))
        tail = rest[full * w:]
        if tail.size:
            self._apt_a = int(tail[0])
            self._apt_b = int(np.count_nonzero(tail == tail[0]))
            self._apt_pos = tail.size
            worst = max(worst, self._apt_b)
        return worst
