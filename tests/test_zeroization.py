"""Zeroization: after a run ends, every buffer that held key bits is read back as zeros.

Both nodes run in this process (``link.pipeline.run_local``) with probes: the random source
records the pattern-bit arrays it hands Alice, ``bob_announce`` Bob's raw bits, ``BlockBits``
every block's packed planes (the sifted key and test bits, appended to by the fused sifting
steps), ``make_side`` every reconciliation side and every ``ReconcileResult.corrected``, and
the ``AuthPool`` class its instances.  After shutdown each recorded key-bearing buffer must be all
zeros and each reconciliation side closed (its C object freed, which wipes the C copies).
"""

from __future__ import annotations

import numpy as np


def test_engine_run_leaves_no_key_bits_behind(tmp_path, monkeypatch):
    """Both nodes of ``qkd run`` (link.node over the in-process model), one block with key: every
    pattern-bit array Alice drew, every sifting result, every reconciliation result and both
    authentication pools' pad buffers read back as zeros once the run has shut down, and every
    reconciliation side was freed."""
    import drivers.qrng as qrng
    import link.node as node_mod
    from link.pipeline import run_local

    drawn: list[np.ndarray] = []

    class RecordingSource(qrng.OsEntropySource):
        def random_bits(self, n):
            b = super().random_bits(n)
            drawn.append(b)
            return b

    sifted: list[np.ndarray] = []

    def recording(fn):
        def wrapped(*a, **kw):
            r = fn(*a, **kw)
            sifted.append(r.bits)
            return r
        return wrapped

    blocks = []

    class RecordingBlockBits(node_mod.BlockBits):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            blocks.append(self)

        def planes(self):             # every key/test bit plane it ever held (grown ones too)
            return [self._z[0], self._x[0]]

    sides, results = [], []
    real_make_side = node_mod.postproc_c.make_side

    def make_side(*a, **kw):
        s = real_make_side(*a, **kw)
        real_result = s.result

        def result(*ra, **rkw):
            r = real_result(*ra, **rkw)
            results.append(r.corrected)
            return r
        s.result = result
        sides.append(s)
        return s

    import link.pipeline as pipeline_mod

    pools = []

    class RecordingPool(pipeline_mod.AuthPool):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            pools.append(self)

    monkeypatch.setattr(pipeline_mod, "AuthPool", RecordingPool)
    monkeypatch.setattr(qrng, "OsEntropySource", RecordingSource)
    monkeypatch.setattr(node_mod, "bob_announce", recording(node_mod.bob_announce))
    monkeypatch.setattr(node_mod, "BlockBits", RecordingBlockBits)
    monkeypatch.setattr(node_mod.postproc_c, "make_side", make_side)
    s = run_local(None, blocks=1, duration_s=90, workdir=tmp_path)
    assert s["blocks"] >= 1 and s["secret_bits"] > 0 and s["keys_identical"], s["alarms"]
    # wiping must not reach the key before it is distilled: the stored keys are not the
    # hash of a wiped buffer (all zeros) but balanced bits (a regression: main at b8a1efd
    # wiped the packed key after verification and hashed the zeros into every key)
    import sqlite3

    from link.keystore import key_rows
    for role in ("alice", "bob"):
        c = sqlite3.connect(tmp_path / f"{role}.db")
        try:
            blob = b"".join(r[3] for r in key_rows(c))
        finally:
            c.close()
        bits = np.unpackbits(np.frombuffer(blob, np.uint8))
        assert bits.size > 100_000 and abs(bits.mean() - 0.5) < 0.01, (role, bits.size, bits.mean())
    assert len(drawn) >= 2 and len(sifted) >= 2 and len(results) >= 2 and len(sides) >= 2
    assert len(blocks) >= 4          # per node: the block that gave key and the one being filled
    planes = [p for b in blocks for p in b.planes()]
    for what, arrays in (("Alice's pattern bits", drawn), ("Bob's raw bits", sifted),
                         ("block key and test bit planes", planes),
                         ("reconciliation results", results)):
        nonzero = [int(np.count_nonzero(a)) for a in arrays if a.any()]
        assert not nonzero, f"{what}: {len(nonzero)} of {len(arrays)} arrays still hold bits"
    for side in sides:
        assert getattr(side, "_c", None) is None and getattr(side, "_ptr", None) is None
    # the authentication pool's pads (PSK + replenished segments) in memory, after shutdown
    assert len(pools) == 2
    for pool in pools:
        assert pool._streams and all(len(b) > 0 and not any(b) for b in pool._streams.values())
