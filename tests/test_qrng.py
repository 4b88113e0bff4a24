"""Random sources: the OS entropy source, a QRNG character device served by a real pseudo-terminal,
the SP 800-90B repetition count test against a per-sample reference, and argument validation."""

from __future__ import annotations

import os
import threading
import time
import tty

import numpy as np
import pytest

from drivers.errors import ConnectionLost, DriverTimeout, DriverValueError, NotConnected
from drivers.interfaces import RandomSource
from drivers.qrng import (
    HealthTestFailure,
    OsEntropySource,
    QrngDevice,
    repetition_count_cutoff,
    repetition_count_test,
)


def test_os_source_shapes_and_fresh_buffers():
    src = OsEntropySource()
    assert isinstance(src, RandomSource) and not src.is_quantum
    a, b = src.random_bytes(4096), src.random_bytes(4096)
    assert a.dtype == np.uint8 and a.size == 4096 and a.flags.writeable
    assert not np.array_equal(a, b)  # 2**-32768 chance of a false failure
    w = src.random_words(1000)
    assert w.dtype == np.uint64 and w.size == 1000
    bits = src.random_bits(100_001)
    assert bits.dtype == np.uint8 and set(np.unique(bits)) <= {0, 1}
    assert abs(bits.mean() - 0.5) < 5 * 0.5 / np.sqrt(bits.size)
    assert src.random_bytes(0).size == 0


def test_choices_frequencies_and_validation():
    src = OsEntropySource()
    p = [0.7, 0.2, 0.1]
    n = 1_000_000
    c = src.choices(n, p)
    assert c.dtype == np.uint8 and c.max() <= 2
    freq = np.bincount(c, minlength=3) / n
    sigma = np.sqrt(np.array(p) * (1 - np.array(p)) / n)
    assert np.all(np.abs(freq - p) < 6 * sigma), freq
    assert set(np.unique(src.choices(1000, [0.0, 1.0]))) == {1}
    for bad in ([0.5, 0.6], [1.0], [-0.1, 1.1], [float("nan"), 1.0]):
        with pytest.raises(DriverValueError, match="probs"):
            src.choices(10, bad)
    with pytest.raises(DriverValueError, match="non-negative integer"):
        src.random_bytes(-1)


def reference_rct(data: np.ndarray, cutoff: int) -> bool:
    """SP 800-90B 4.4.1 as written: count repeats sample by sample."""
    a, b = None, 0
    for x in data.tolist():
        if x == a:
            b += 1
            if b >= cutoff:
                return False
        else:
            a, b = x, 1
    return True


def test_repetition_count_test_matches_reference_and_carries_state():
    assert repetition_count_cutoff(8.0) == 6 and repetition_count_cutoff(7.0) == 7
    rng = np.random.default_rng(3)
    for trial in range(200):
        d = rng.integers(0, 4, 300).astype(np.uint8)  # low entropy so long runs occur
        cutoff = int(rng.integers(3, 8))
        ok, _ = repetition_count_test(d, cutoff)
        assert ok == reference_rct(d, cutoff), trial
        cut = int(rng.integers(0, d.size))
        ok1, st = repetition_count_test(d[:cut], cutoff)
        ok2, _ = repetition_count_test(d[cut:], cutoff, st)
        assert (ok1 and ok2) == reference_rct(d, cutoff), trial


@pytest.fixture
def pty_device():
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_qrng_device_reads_exact_bytes(pty_device):
    master, path = pty_device
    payload = np.random.default_rng(5).integers(0, 256, 200_000).astype(np.uint8)
    payload[1000:1003] = 7  # a short run is fine (cutoff 7 at H = 7 bits/byte)
    writer = threading.Thread(target=lambda: os.write(master, payload.tobytes()) and None)
    with QrngDevice(path, timeout_s=2.0) as dev:
        assert dev.is_quantum and isinstance(dev, RandomSource)
        writer.start()
        got = dev.random_bytes(150_000)
        words = dev.random_words(50_000 // 8)
    writer.join()
    np.testing.assert_array_equal(got, payload[:150_000])
    np.testing.assert_array_equal(words.view(np.uint8), payload[150_000:200_000])


def test_qrng_device_stall_times_out_then_recovers(pty_device):
    master, path = pty_device
    dev = QrngDevice(path, timeout_s=0.3)
    with pytest.raises(NotConnected):
        dev.random_bytes(1)
    dev.open()
    os.write(master, b"\x01\x02\x03")
    t0 = time.monotonic()
    with pytest.raises(DriverTimeout) as ei:
        dev.random_bytes(10)
    assert 0.25 < time.monotonic() - t0 < 2.0
    assert "QRNG@" in str(ei.value) and "3 of 10 bytes" in str(ei.value)
    dev.reconnect()
    os.write(master, bytes(range(16)))
    assert dev.random_bytes(16).tolist() == list(range(16))
    dev.close()


def test_qrng_health_test_failure_and_eof(pty_device, tmp_path):
    master, path = pty_device
    with QrngDevice(path, timeout_s=1.0) as dev:
        os.write(master, bytes([9]) * 64)
        with pytest.raises(HealthTestFailure, match="repetition count"):
            dev.random_bytes(64)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with QrngDevice(str(empty)) as dev, pytest.raises(ConnectionLost, match="end of file"):
        dev.random_bytes(8)
    with pytest.raises(ConnectionLost, match="cannot open"):
        QrngDevice(str(tmp_path / "nope")).open()


@pytest.mark.hardware
def test_hardware_qrng(instrument_address):
    path = instrument_address("qrng")
    with QrngDevice(path) as dev:
        b = dev.random_bytes(1 << 20)
        assert abs(b.mean() - 127.5) < 1.0
