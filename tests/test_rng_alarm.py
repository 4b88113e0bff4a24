"""A random source that goes stuck in mid-stream (after its start-up test and 3 MiB of good output)
stops key generation with an ``rng_health`` alarm (SP 800-90B health tests in drivers.rng_health,
raised through link.node), and nothing reaches either key store."""

from __future__ import annotations

import numpy as np

import drivers.qrng as qrng
from link.pipeline import run_local


class _GoesStuck(qrng.OsEntropySource):
    """/dev/urandom for the first ``good_bytes``, then a constant byte (a stuck noise source)."""

    good_bytes = 3 << 20

    def _read(self, view):
        super()._read(view)
        served = getattr(self, "_served", 0)
        out = np.frombuffer(view, np.uint8)
        if served + out.size > self.good_bytes:
            out[max(0, self.good_bytes - served):] = 0x42
        self._served = served + out.size


def test_stuck_source_mid_run_raises_rng_alarm_and_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(qrng, "OsEntropySource", _GoesStuck)
    s = run_local(None, blocks=3, duration_s=60, workdir=tmp_path)
    assert "rng_health" in s["alarms"], s["alarms"]
    assert s["blocks"] < 3 and s["secret_bits"] == 0  # the run stopped early, no key from the stuck source
    assert s["keys"] == {"alice": 0, "bob": 0} and s["keys_identical"] is True
