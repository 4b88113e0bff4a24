"""SP 800-90B health tests: cutoffs against the standard's formulas and published values, the
vectorized tests against a sample-by-sample transcription of the standard's pseudocode (across
buffer boundaries), and the two random sources failing on a stuck or biased stream and latching."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from drivers.errors import DriverError
from drivers.qrng import OsEntropySource, QrngDevice, RandomSourceBase
from drivers.rng_health import (
    STARTUP_SAMPLES,
    HealthTests,
    RngHealthError,
    RngHealthIntermittent,
    apt_cutoff,
    apt_window,
    critbinom,
    rct_cutoff,
)


def test_cutoffs_match_the_standard():
    # 4.4.1: C = 1 + ceil(20 / H) at alpha = 2^-20
    assert [rct_cutoff(h) for h in (8, 7, 4, 1, 0.5)] == [4, 4, 6, 21, 41]
    assert rct_cutoff(8, 40) == 6
    assert apt_window(True) == 1024 and apt_window(False) == 512
    # 4.4.2: C = 1 + CRITBINOM(W, 2^-H, 1 - alpha); published values: 589 (binary, H = 1,
    # W = 1024), 410 (H = 0.5, W = 512, Go's crypto/internal/entropy), 13 (H = 8, W = 512,
    # Nordic nRF54 TRNG PROPTESTCUTOFF default)
    assert apt_cutoff(1.0, True) == 589
    assert apt_cutoff(0.5, False) == 410
    assert apt_cutoff(8.0, False) == 13
    for h, binary in [(0.3, True), (0.9, True), (1.0, False), (2.5, False), (6.0, False), (8.0, False)]:
        for a in (20, 30, 40):
            w = apt_window(binary)
            ref = 1 + int(binom.isf(2.0 ** -a, w, 2.0 ** -h))  # isf: smallest k with P(X > k) <= alpha
            assert apt_cutoff(h, binary, a) == ref, (h, binary, a)
    assert critbinom(10, 0.5, 1) == 5  # P(X > 5) = 0.377 <= 0.5 < P(X > 4) = 0.623
    for bad in (0, -1, 9, float("nan"), True):
        with pytest.raises(ValueError, match="min_entropy"):
            rct_cutoff(bad)
    with pytest.raises(ValueError, match="min_entropy"):
        apt_cutoff(2.0, True)
    with pytest.raises(ValueError, match="alpha_log2"):
        HealthTests(8, alpha_log2=10)


def reference_stream(samples: np.ndarray, rct_c: int, w: int, apt_c: int) -> int | None:
    """SP 800-90B 4.4.1/4.4.2 pseudocode, one sample at a time; index of the first failure or None."""
    a_r, b_r = None, 0
    a_p, b_p, i_p = None, 0, w  # i_p = w: the next sample starts a window
    for idx, x in enumerate(samples.tolist()):
        if x == a_r:
            b_r += 1
            if b_r >= rct_c:
                return idx
        else:
            a_r, b_r = x, 1
        if i_p == w:
            a_p, b_p, i_p = x, 1, 1
        else:
            i_p += 1
            if x == a_p:
                b_p += 1
        if b_p >= apt_c:
            return idx
    return None


@pytest.mark.parametrize("binary", [False, True])
def test_vectorized_tests_match_reference_across_buffers(binary):
    rng = np.random.default_rng(7)
    h = 0.4 if binary else 2.0
    for trial in range(60):
        t = HealthTests(h, binary=binary)
        n = 4000
        if binary:
            p1 = rng.uniform(0.5, 0.85)
            s = (rng.random(n) < p1).astype(np.uint8)
        else:
            # 4 symbols, one of them more or less favoured: some streams fail, some pass
            p0 = rng.uniform(0.25, 0.75)
            s = np.where(rng.random(n) < p0, 0, rng.integers(1, 4, n)).astype(np.uint8)
        ref = reference_stream(s, t.rct_cutoff, t.apt_window, t.apt_cutoff)
        # split into random buffers (a run or a window straddles them); the start-up test
        # takes the first 1024 samples
        cuts = np.sort(rng.integers(STARTUP_SAMPLES, n, 5))
        parts = np.split(s, np.concatenate(([STARTUP_SAMPLES], cuts)))
        failed_at = None
        for k, part in enumerate(parts):
            try:
                t.startup(part) if k == 0 else t.check(part)
            except RngHealthError:
                failed_at = k
                break
        if ref is None:
            assert failed_at is None, trial
            assert t.samples_tested == n
        else:
            ends = np.cumsum([p.size for p in parts])
            assert failed_at == int(np.searchsorted(ends, ref, side="right")), trial


def test_failure_latches_until_reset():
    t = HealthTests(8.0)
    with pytest.raises(RngHealthError, match="start-up test has not run"):
        t.check(np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match="1024"):
        t.startup(np.arange(100, dtype=np.uint8))
    good = np.random.default_rng(1).permutation(np.tile(np.arange(256, dtype=np.uint8), 8))
    t.startup(good)
    with pytest.raises(RngHealthError, match="repetition count test failed") as ei:
        t.check(np.full(10, 3, np.uint8))
    assert isinstance(ei.value, DriverError)
    with pytest.raises(RngHealthError, match="failed earlier"):
        t.check(good)  # good data does not clear the failure
    t.reset()
    with pytest.raises(RngHealthError, match="start-up"):
        t.check(good)
    t.startup(good)
    t.check(good)


class ScriptedSource(RandomSourceBase):
    """A source whose raw bytes come from a numpy generator: stuck, biased or good."""

    name = "scripted"

    def __init__(self, kind: str, seed: int = 0, *, h: float = 8.0, alpha_log2: float = 40.0):
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        self.health = HealthTests(h, alpha_log2=alpha_log2, name="scripted")

    def _read(self, view: memoryview) -> None:
        out = np.frombuffer(view, np.uint8)
        if self.kind == "stuck":
            out[:] = 0xA5
        elif self.kind == "biased":  # bits with P(1) = 0.9, packed 8 per byte
            out[:] = np.packbits(self.rng.random(out.size * 8) < 0.9, bitorder="little")
        else:
            out[:] = self.rng.integers(0, 256, out.size, dtype=np.uint8)


def test_stuck_source_fails_at_startup_and_stays_failed():
    src = ScriptedSource("stuck")
    with pytest.raises(RngHealthError, match="start-up test: repetition count"):
        src.random_bytes(100)
    with pytest.raises(RngHealthError, match="failed earlier"):
        src.random_words(10)
    src.kind = "good"
    with pytest.raises(RngHealthError, match="failed earlier"):
        src.random_bits(10)
    src.reset_health()
    assert src.random_bytes(1000).size == 1000
    src.kind = "stuck"
    out = np.empty(0)
    with pytest.raises(RngHealthError, match="repetition count"):
        out = src.random_bytes(5000)
    assert out.size == 0


def test_source_going_stuck_mid_stream_wipes_the_buffer():
    src = ScriptedSource("good")
    src.random_bytes(10_000)

    class Half(ScriptedSource):
        def _read(self, view):
            out = np.frombuffer(view, np.uint8)
            out[:] = self.rng.integers(0, 256, out.size, dtype=np.uint8)
            out[out.size // 2:] = 0

    src.__class__ = Half
    buf = np.full(4096, 0x55, np.uint8)
    with pytest.raises(RngHealthError):
        src._fill(memoryview(buf))
    assert not buf.any()  # the failed output, good half included, was wiped


@pytest.mark.parametrize("alpha_log2", [20.0, 40.0])
def test_biased_source_trips_adaptive_proportion(alpha_log2):
    # P(1) = 0.9 bits: byte 0xFF has probability 0.9^8 = 0.43, no run of 4-6 needed
    # for the APT to see ~220 of 512 against a cutoff of 13 (alpha 2^-20) or 19 (2^-40).
    src = ScriptedSource("biased", alpha_log2=alpha_log2)
    with pytest.raises(RngHealthError, match="start-up test: (adaptive proportion|repetition count)"):
        src.random_bytes(10)
    # as a binary source claiming H = 1, p = 0.9 bits: runs of ones beyond the RCT cutoff
    # (21 / 41) come first; the APT (W = 1024, cutoff 589 / 625) would see ~920 ones
    t = HealthTests(1.0, binary=True, alpha_log2=alpha_log2)
    bits = (np.random.default_rng(4).random(1 << 14) < 0.9).astype(np.uint8)
    with pytest.raises(RngHealthError, match="start-up test: (repetition count|adaptive proportion)"):
        t.startup(bits)
    # a bias with no runs at all, which only the APT sees: every other byte is 0x00
    t = HealthTests(8.0, alpha_log2=alpha_log2)
    b = np.random.default_rng(5).integers(1, 256, 1 << 12).astype(np.uint8)
    b[::2] = 0
    with pytest.raises(RngHealthError, match="adaptive proportion test failed: one value took 256 of a "
                       "512-sample window"):
        t.startup(b)
    # and a binary one: 1,1,0 repeated (P(1) = 2/3, longest run 2), claimed H = 1
    t = HealthTests(1.0, binary=True, alpha_log2=alpha_log2)
    with pytest.raises(RngHealthError, match="adaptive proportion .* 1024-sample window"):
        t.startup(np.tile(np.array([1, 1, 0], np.uint8), 1000))


def test_good_sources_raise_no_false_alarm():
    # False-positive argument: the sources use alpha = 2^-40 (drivers.qrng.DEFAULT_HEALTH_ALPHA_LOG2)
    # and claim H = 8 bits/byte.  For uniform bytes, RCT: P(run of C = 6 starting at a given
    # byte) = 2^-40; APT: P(B >= 19 of 512 | p = 2^-8) <= 2^-40 per window.  Over 2^23 bytes
    # (8 MiB) and 2^14 windows per source the union bound gives <= 2^-17 per source, so this
    # test fails spuriously less than once in 10^5 runs.
    os_src = OsEntropySource()
    assert os_src.health is not None and os_src.health.rct_cutoff == 6 and os_src.health.apt_cutoff == 19
    for _ in range(2):
        os_src.random_bytes(1 << 22)
    assert os_src.health.samples_tested == STARTUP_SAMPLES + (1 << 23)
    sc = ScriptedSource("good", seed=11)
    for _ in range(8):
        sc.random_bytes(1 << 20)
    assert sc.health.failed is None


def test_qrng_device_health_configuration():
    dev = QrngDevice("/nonexistent", min_entropy_per_byte=7.0)
    assert dev.health.rct_cutoff == 7 and dev.rct_cutoff == 7  # 1 + ceil(40 / 7)
    assert QrngDevice("/x", health_tests=False).health is None
    assert OsEntropySource(health_tests=False).health is None


class Planted(ScriptedSource):
    """A good source into whose next reads a test plants runs of one byte value."""

    def __init__(self, seed: int):
        super().__init__("good", seed)
        self.plant: list[int] = []

    def _read(self, view):
        super()._read(view)
        if self.plant:
            n = self.plant.pop(0)
            out = np.frombuffer(view, np.uint8)
            out[49], out[50:50 + n], out[50 + n] = 0x3D, 0x3C, 0x3D   # a run of exactly n


def test_an_isolated_failure_at_alpha_is_intermittent_a_repeat_or_a_long_run_latches(caplog, monkeypatch):
    """At alpha = 2^-40 a healthy byte source repeats a value 6 times about once per 2^40 bytes:
    every ~3.5 h of Alice's draws on the rig (a soak run stopped Alice after 73 s). Such a
    failure discards the output, re-runs the start-up test and draws again; a second one soon
    after, or a run past the persistent cutoff (11 at H = 8), latches as before."""
    import drivers.rng_health as rh

    src = Planted(seed=3)
    h = src.health
    assert (h.rct_cutoff, h.rct_cutoff_persistent) == (6, 11)
    src.random_bytes(4096)
    src.plant = [6]
    with caplog.at_level("WARNING", logger="drivers.qrng"):
        out = src.random_bytes(4096)               # no exception: drawn again
    assert h.failed is None and h.intermittent_failures == 1
    assert not (out[50:56] == 0x3C).all()          # the failed buffer was not handed out
    assert "intermittent repetition count test failed: a sample value repeated 6 times" in caplog.text
    src.plant = [6]                                 # a second one within 2^30 samples: persistent
    with pytest.raises(RngHealthError, match="second failure .* after the last one") as ei:
        src.random_bytes(4096)
    assert not isinstance(ei.value, RngHealthIntermittent) and h.failed
    with pytest.raises(RngHealthError, match="failed earlier"):
        src.random_bytes(10)
    # past the persistent cutoff: latched at once, even as the first failure
    src = Planted(seed=4)
    src.random_bytes(4096)
    src.plant = [11]
    with pytest.raises(RngHealthError, match="persistent cutoff") as ei:
        src.random_bytes(4096)
    assert not isinstance(ei.value, RngHealthIntermittent) and src.health.failed
    # failures far apart stay intermittent (the window made small for the test)
    monkeypatch.setattr(rh, "REPEAT_WINDOW_SAMPLES", 50_000)
    src = Planted(seed=5)
    src.random_bytes(4096)
    for _ in range(3):
        src.plant = [6]
        src.random_bytes(4096)
        src.random_bytes(60_000)
    assert src.health.intermittent_failures == 3 and src.health.failed is None
