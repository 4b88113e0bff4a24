"""One block end to end in memory: frames from the physical model, both halves of the
post-processing protocol, identical secret keys (or the same abort on both sides)."""

from __future__ import annotations

import numpy as np
import pytest

from hil.model import LinkModel
from hil.scenario import Scenario
from link.block import AliceBlock, BlockParams, BobBlock, ProtocolError, run_block_in_memory
from link.finite_key import DecoySettings
from link.frontend import ModelLink


def _words(seed: int):
    rng = np.random.default_rng(seed)
    return lambda n: rng.integers(0, 2**64, size=n, dtype=np.uint64)


def _run(scenario: str, n_frames: int, frame_slots: int = 1 << 18, overrides: dict | None = None,
         method: str = "cascade", seed: int = 3):
    sc = Scenario.load(scenario).with_overrides({"source.frame_slots": frame_slots, **(overrides or {})})
    model = LinkModel(sc, seed=seed)
    link = ModelLink(model)
    pats, frames = [], []
    for f in range(n_frames + 3):  # a few more so the block's frames complete (time of flight)
        p = model.alice_pattern(f)
        pats.append((f, p.basis, p.bit, p.intensity))
        link.alice.emit(p.basis, p.bit, p.intensity)
        frames += link.bob.poll(0.0)
    frames += link.bob.poll(0.1)
    assert len(frames) >= n_frames, "Bob's front end completed too few frames"
    frames = frames[:n_frames]
    src = sc.source
    decoy = DecoySettings(tuple(src.intensities), tuple(src.intensity_probs))
    params = BlockParams(frame_slots=frame_slots, decoy=decoy, method=method)
    alice = AliceBlock(0, pats[:n_frames], params, _words(1))
    bob = BobBlock(0, frames, params, _words(2))
    msgs = run_block_in_memory(alice, bob)
    return alice.result, bob.result, msgs


def test_metro_block_gives_identical_secret_keys():
    a, b, msgs = _run("metro-25km", 40)
    assert a.ok and b.ok, (a.reason, b.reason)
    assert a.ell == b.ell > 0
    np.testing.assert_array_equal(a.key, b.key)
    assert a.stats["n_key"] > 100_000
    assert 0 < a.stats["qber_z"] < 0.05
    assert a.stats["leaked"] >= a.stats["leaked_ec"] + 128
    assert msgs > 6


def test_intercept_resend_aborts_on_both_sides():
    a, b, _ = _run("intercept-resend", 10)
    assert not a.ok and not b.ok
    assert "QBER" in a.reason and a.reason == b.reason
    assert a.key is None and b.key is None


def test_out_of_order_message_is_refused():
    decoy = DecoySettings((0.5, 0.1, 2e-4), (0.7, 0.2, 0.1))
    params = BlockParams(frame_slots=16, decoy=decoy)
    z = np.zeros(16, np.uint8)
    alice = AliceBlock(0, [(0, z, z, z)], params, _words(1))
    with pytest.raises(ProtocolError, match="unexpected message"):
        alice.feed("verified", b"")
    with pytest.raises(ProtocolError, match="bad 'ann' payload"):
        alice.feed("ann", b"\x00\x01")
