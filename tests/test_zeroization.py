"""Zeroization: when a block ends (key, abort), every buffer that held key bits is read back as zeros.

The block protocol runs in memory (as in test_block.py) with two probes: ``np.concatenate`` in
``link.block`` records its inputs and output (so the per-frame pieces the sifted key is glued from
can be read back), and ``make_side`` records every reconciliation side and every
``ReconcileResult.corrected`` it hands out.  After the block, each recorded key-bearing buffer must
be all zeros and each reconciliation side closed (its C object freed, which wipes the C copies).
"""

from __future__ import annotations

import numpy as np
import pytest

import link.block as block_mod
from hil.model import LinkModel
from hil.scenario import Scenario
from link.block import AliceBlock, BlockParams, BobBlock, run_block_in_memory
from link.finite_key import DecoySettings
from link.frontend import ModelLink


def _words(seed: int):
    rng = np.random.default_rng(seed)
    return lambda n: rng.integers(0, 2**64, size=n, dtype=np.uint64)


class _NumpyProbe:
    """``link.block``'s ``np`` with ``concatenate`` recorded (everything else is numpy)."""

    def __init__(self):
        self.records: list[tuple[list[np.ndarray], np.ndarray]] = []

    def __getattr__(self, name):
        return getattr(np, name)

    def concatenate(self, pieces, *a, **kw):
        pieces = list(pieces)
        out = np.concatenate(pieces, *a, **kw)
        self.records.append((pieces, out))
        return out


@pytest.fixture
def probes(monkeypatch):
    npp = _NumpyProbe()
    monkeypatch.setattr(block_mod, "np", npp)
    sides, results = [], []
    real_make_side = block_mod.pp.make_side

    def make_side(*a, **kw):
        s = real_make_side(*a, **kw)
        real_result = s.result

        def result():
            r = real_result()
            results.append(r.corrected)
            return r
        s.result = result
        sides.append(s)
        return s
    monkeypatch.setattr(block_mod.pp, "make_side", make_side)
    return npp, sides, results


def _run(scenario: str, n_frames: int, method: str = "cascade", frame_slots: int = 1 << 18):
    sc = Scenario.load(scenario).with_overrides({"source.frame_slots": frame_slots})
    model = LinkModel(sc, seed=3)
    link = ModelLink(model)
    pats, frames = [], []
    for f in range(n_frames + 3):
        p = model.alice_pattern(f)
        pats.append((f, p.basis, p.bit, p.intensity))
        link.alice.emit(p.basis, p.bit, p.intensity)
        frames += link.bob.poll(0.0)
    frames += link.bob.poll(0.1)
    frames = frames[:n_frames]
    src = sc.source
    params = BlockParams(frame_slots=frame_slots, decoy=DecoySettings(tuple(src.intensities),
                                                                        tuple(src.intensity_probs)),
                         method=method)
    alice = AliceBlock(0, pats[:n_frames], params, _words(1))
    bob = BobBlock(0, frames, params, _words(2))
    pattern_bits = [bit for _f, _b, bit, _i in pats[:n_frames]]
    run_block_in_memory(alice, bob)
    return alice, bob, pattern_bits


def _key_buffers(alice, bob, pattern_bits, npp, results) -> dict[str, list[np.ndarray]]:
    bufs: dict[str, list[np.ndarray]] = {
        "alice pattern bits (per frame)": pattern_bits,
        "alice sifted Z key": [alice._key_bits] if alice._key_bits is not None else [],
        "bob sifted Z key": [bob._key_bits] if bob._key_bits is not None else [],
        "bob announced-slot bits (per frame)": [a.bits for a in bob._anns],
        "bob reconciled key": [bob._corrected] if bob._corrected is not None else [],
        "reconciliation results (both sides)": list(results),
    }
    keys = [k for k in (alice._key_bits, bob._key_bits) if k is not None]
    bufs["per-frame Z pieces before concatenation"] = [
        p for pieces, out in npp.records if any(out is k for k in keys) for p in pieces]
    return bufs


@pytest.mark.parametrize("method,frames,ends", [
    ("cascade", 40, "key"),
    # LDPC on this short block leaks too much: the block aborts at the finite-key step, after
    # reconciliation and verification, i.e. with every key buffer in use
    ("ldpc-blind", 40, "finite-key length"),
])
def test_key_buffers_are_zero_after_reconciliation(probes, method, frames, ends):
    npp, sides, results = probes
    alice, bob, pattern_bits = _run("metro-25km", frames, method)
    if ends == "key":
        assert alice.result.ok and bob.result.ok, (alice.result.reason, bob.result.reason)
    else:
        assert ends in alice.result.reason and alice.result.reason == bob.result.reason
    bufs = _key_buffers(alice, bob, pattern_bits, npp, results)
    assert bufs["alice sifted Z key"][0].size > 10_000 and bufs["per-frame Z pieces before concatenation"]
    assert len(results) >= 2 and len(sides) == 2  # both sides reconciled and called result()
    for what, arrays in bufs.items():
        assert arrays, what
        for a in arrays:
            assert not np.asarray(a).any(), f"{what}: {np.count_nonzero(a)} nonzero of {a.size}"
    for s in sides:  # the C objects holding key copies were freed (and wiped) when the block ended
        assert getattr(s, "_c", None) is None and getattr(s, "_ptr", None) is None, type(s).__name__
    # the delivered keys are the caller's; BlockResult.wipe() clears them
    for r in (alice.result, bob.result):
        if r.ok:
            assert r.key.any()
            r.wipe()
            assert not r.key.any()


def test_key_buffers_are_zero_after_an_abort(probes):
    npp, sides, results = probes
    alice, bob, pattern_bits = _run("intercept-resend", 8)
    assert not alice.result.ok and "QBER" in alice.result.reason
    bufs = _key_buffers(alice, bob, pattern_bits, npp, results)
    assert bufs["alice sifted Z key"][0].size > 1000
    for what, arrays in bufs.items():
        for a in arrays:
            assert not np.asarray(a).any(), f"{what}: {np.count_nonzero(a)} nonzero of {a.size}"


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

    sides, results = [], []
    real_make_side = node_mod.postproc_c.make_side

    def make_side(*a, **kw):
        s = real_make_side(*a, **kw)
        real_result = s.result

        def result():
            r = real_result()
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
    monkeypatch.setattr(node_mod, "alice_sift", recording(node_mod.alice_sift))
    monkeypatch.setattr(node_mod, "bob_sift", recording(node_mod.bob_sift))
    monkeypatch.setattr(node_mod.postproc_c, "make_side", make_side)
    s = run_local(None, blocks=1, duration_s=90, workdir=tmp_path)
    assert s["blocks"] >= 1 and s["secret_bits"] > 0 and s["keys_identical"], s["alarms"]
    assert len(drawn) >= 2 and len(sifted) >= 4 and len(results) >= 2 and len(sides) >= 2
    for what, arrays in (("Alice's pattern bits", drawn), ("sifting results", sifted),
                         ("reconciliation results", results)):
        nonzero = [int(np.count_nonzero(a)) for a in arrays if a.any()]
        assert not nonzero, f"{what}: {len(nonzero)} of {len(arrays)} arrays still hold bits"
    for side in sides:
        assert getattr(side, "_c", None) is None and getattr(side, "_ptr", None) is None
    # the authentication pool's pads (PSK + replenished segments) in memory, after shutdown
    assert len(pools) == 2
    for pool in pools:
        assert pool._streams and all(len(b) > 0 and not any(b) for b in pool._streams.values())
