"""Detector efficiency mismatch in the finite-key step (link.finite_key, "Detector efficiency
mismatch") and Alice's check of the configured bound against the block's X bits (link.node).

KEY, TEST, RX, SQUASHED and LEAK are one 2^20-bit block of the rig as Alice's node passed them
to the finite-key step (metro-25km, seed 1, ``config_for_scenario``, 2026-11-25), so the lengths
are those the link computes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from link import finite_key as fk

KEY = fk.BasisCounts((798_524, 255_974, 149), (2_163, 724, 0))
TEST = fk.BasisCounts((139_157, 45_757, 23), (405, 132, 1))
DECOY = fk.DecoySettings((0.42, 0.22, 0.0002), (0.5, 0.3, 0.2))
RX = fk.PassiveReceiver(0.85, 20_738, 2_503_015, 0.5, (2_112_006, 370_271))
SQUASHED = (14_302, 453)
LEAK = 30_807


def _length(ratio: float | None, receiver=RX, protocol="2-decoy", key=KEY, test=TEST, decoy=DECOY):
    mm = None if ratio is None else fk.DetectorMismatch(ratio, SQUASHED)
    return fk.secret_key_length(key, test, decoy, leak_ec_bits=LEAK, protocol=protocol,
                                receiver=receiver, mismatch=mm)


@pytest.mark.parametrize("receiver", [RX, None], ids=["passive", "active"])
def test_ratio_one_is_exactly_the_length_without_the_bound(receiver):
    """At ratio 1 (equal detectors) nothing is tagged and no eps term is spent: every figure,
    the eps budget included, is the one the analysis gave before the bound existed."""
    before = _length(None, receiver)
    at_one = _length(1.0, receiver)
    assert before.ell > 0
    assert at_one.as_dict() == before.as_dict()
    assert at_one.extra["tagged_z"] == at_one.extra["tagged_x"] == 0.0


def test_ratio_one_is_exactly_the_length_without_the_bound_1decoy():
    # synthetic counts shaped like the rig block's first two classes (a 1-decoy source)
    key = fk.BasisCounts((798_524, 255_974), (2_163, 724))
    test = fk.BasisCounts((139_157, 45_757), (405, 132))
    d1 = fk.DecoySettings((0.42, 0.22), (0.6, 0.4))
    before = _length(None, protocol="1-decoy", key=key, test=test, decoy=d1)
    assert before.ell > 0
    assert _length(1.0, protocol="1-decoy", key=key, test=test, decoy=d1).as_dict() == before.as_dict()


def test_length_falls_as_the_ratio_falls():
    """Each step down in the configured ratio tags more events and costs key, down to none."""
    ratios = (1.0, 0.999, 0.99, 0.97, 0.95, 0.9, 0.8, 0.7, 0.5, 0.4)
    res = [_length(r) for r in ratios]
    ells = [r.ell for r in res]
    assert all(a > b for a, b in zip(ells, ells[1:]) if a > 0), ells
    assert ells[0] > 0 and ells[-1] == 0
    tz = [r.extra["tagged_z"] for r in res]
    assert all(a < b for a, b in zip(tz, tz[1:])), tz
    # the phase error is rescaled GLLP-like: the test basis' single-photon errors over fewer events
    assert res[5].phase_error > res[0].phase_error
    assert res[5].eps.parameter_estimation > res[0].eps.parameter_estimation * (21 + 4) / (21 + 4 + 1)


def test_split_range_widened_by_the_ratio():
    """The common receiver's optical split is within odds factor rho of the efficiency-weighted
    setting, so the multi-photon bounds grow as rho falls, and are unchanged at rho = 1."""
    eps = 1e-10 / fk.eps_terms("2-decoy", True, True)      # 21 + 4 passive + 4 mismatch
    b1 = fk.multiphoton_detection_bounds(RX, eps)
    assert fk.multiphoton_detection_bounds(RX, eps, 1.0) == b1
    b9, b8 = fk.multiphoton_detection_bounds(RX, eps, 0.9), fk.multiphoton_detection_bounds(RX, eps, 0.8)
    assert b1[0] < b9[0] < b8[0] and b1[1] < b9[1] < b8[1]
    assert _length(0.9).extra["multiphoton_z"] == pytest.approx(b9[0])
    with pytest.raises(ValueError, match="efficiency_ratio"):
        fk.multiphoton_detection_bounds(RX, eps, 0.0)


def test_tagged_bound_against_the_worst_tagging_it_allows():
    """Tag each single click with probability 1 - rho and each squashed double click with
    1 - rho^2 (the bound's worst case): the tagged count stays below the bound in every one of
    20,000 blocks, and the bound is within its tail of the mean: ~12 standard deviations, what
    a union over every N and S at eps = 1e-10/29 costs (sqrt(2 l), l ~ 61)."""
    rng = np.random.default_rng(7)
    n, s, rho = 1_000_000, 14_000, 0.9
    tagged = rng.binomial(n - s, 1 - rho, 20_000) + rng.binomial(s, 1 - rho * rho, 20_000)
    bound = fk.tagged_detection_bound(n, rho, s, 1e-10 / 29)
    assert tagged.max() < bound
    assert 6 * tagged.std() < bound - tagged.mean() < 13 * tagged.std()
    assert fk.tagged_detection_bound(n, 1.0, s, 1e-10) == 0.0
    assert fk.tagged_detection_bound(100, 0.01, 0, 1e-10) == 100.0          # never more than n
    for bad in ((n, 0.0, s, 1e-10), (n, 1.01, s, 1e-10), (n, rho, s, 0.0), (-1, rho, s, 1e-10)):
        with pytest.raises(ValueError):
            fk.tagged_detection_bound(*bad)


def test_common_click_probability_is_at_least_rho_for_any_photon_number():
    """The tagging step's premise: a real click (detector efficiency b_j for photon j, dark-count
    probability delta) is also a click of the common receiver (efficiency a_j >= rho b_j) with
    probability >= rho, whatever the photons' number and modes."""
    rng = np.random.default_rng(3)
    rho = 0.8
    for m in (1, 2, 3, 5, 20):
        b = rng.uniform(0.01, 1.0, (10_000, m))
        a = b * rng.uniform(rho, 1.0, (10_000, m))
        delta = rng.uniform(0.0, 0.01, (10_000, 1))
        p_real = 1 - (1 - delta[:, 0]) * np.prod(1 - b, axis=1)
        p_common = 1 - (1 - delta[:, 0]) * np.prod(1 - a, axis=1)
        assert np.all(p_common / p_real >= rho - 1e-12), m


def test_share_check():
    n = 92_000
    # 0.4366 of 1s: A at 0.55, D at 0.71 (ratio 0.775)
    ones = round(0.4366 * n)
    assert fk.share_allows_ratio(ones, n, 0.77)
    assert not fk.share_allows_ratio(ones, n, 0.9)
    assert not fk.share_allows_ratio(n - ones, n, 0.9)          # either detector the weaker
    assert fk.share_allows_ratio(n // 2, n, 1.0)
    assert fk.share_allows_ratio(0, 0, 1.0)
    with pytest.raises(ValueError, match="ones"):
        fk.share_allows_ratio(n + 1, n, 0.9)


def test_mismatch_settings_refused():
    from link.config import ConfigError, parse_node_file
    from link.node import NodeConfig, mismatch_counts
    from link.payload import PayloadError

    with pytest.raises(ValueError, match="ratio_min"):
        fk.DetectorMismatch(0.0)
    with pytest.raises(ValueError, match="ratio_min"):
        fk.DetectorMismatch(1.2)
    with pytest.raises(ValueError, match="squashed"):
        fk.DetectorMismatch(0.9, (1, -1))
    cfg = NodeConfig(detector_efficiency_ratio_min=0.9)
    assert mismatch_counts(cfg, {"squashed": [3, 1]}) == fk.DetectorMismatch(0.9, (3, 1))
    for bad in (None, [3], [3, -1], [3.0, 1], "3,1"):
        with pytest.raises(PayloadError, match="squashed"):
            mismatch_counts(cfg, {"squashed": bad})
    assert not mismatch_counts(replace(cfg, detector_efficiency_ratio_min=1.0), {}).active
    base = {"node": {"role": "alice", "link_id": "l", "psk": "a.psk", "store": "a.db"},
            "channel": {"proto": "tcp://127.0.0.1:1", "ctrl": "tcp://127.0.0.1:2"},
            "frontend": {"lab": "lab.toml", "instrument": "pattern_generator", "frame_slots": 1024,
                         "clock_hz": 1e9}}
    nf = parse_node_file({**base, "protocol": {"detector_efficiency_ratio_min": 0.93}}, "<dict>")
    assert nf.protocol.detector_efficiency_ratio_min == 0.93
    assert parse_node_file(base, "<dict>").protocol.detector_efficiency_ratio_min == 0.9   # default
    for bad in (1.5, 0.0, "0.9"):
        with pytest.raises(ConfigError, match="detector_efficiency_ratio_min"):
            parse_node_file({**base, "protocol": {"detector_efficiency_ratio_min": bad}}, "<dict>")


def _run_mismatched(tmp_path: Path, ratio: float):
    """One 2^19-bit block through both nodes on the rig with Bob's A detector at 0.55 (D 0.71:
    ratio 0.775, X share of 1s 0.437), the node configured with ``ratio``."""
    from hil.model import LinkModel
    from link.pipeline import config_for_scenario, run_local

    src = Path(__file__).resolve().parents[1] / "hil" / "scenarios" / "metro-25km.toml"
    text = src.read_text().replace("efficiency = [0.70, 0.68, 0.71, 0.69]",
                                   "efficiency = [0.70, 0.68, 0.71, 0.55]")
    assert "0.71, 0.55" in text
    scen = tmp_path / "mismatch.toml"
    scen.write_text(text)
    cfg = config_for_scenario(LinkModel(str(scen)).scenario, block_bits=1 << 19)
    assert cfg.detector_efficiency_ratio_min == pytest.approx(0.55 / 0.71)    # the rig's truth
    cfg = replace(cfg, detector_efficiency_ratio_min=ratio)
    nodes: dict = {}

    def attach(held):
        nodes.update(held)
        return lambda: None

    s = run_local(str(scen), config=cfg, blocks=1, duration_s=60, seed=1, workdir=tmp_path / f"run{ratio}",
                  attach=attach)
    return s, nodes["alice"]


def test_rig_with_unequal_detectors_makes_key_only_at_a_true_setting(tmp_path):
    """Real nodes on the rig, Bob's X detectors at 0.71/0.55. Configured 0.77 (below the true
    0.775): the block makes key, with the tagged events taken off. Configured 0.9 (a lie): the
    X share of 1s contradicts it beyond 5 sigma, ``detector_mismatch`` is raised and the block
    makes no key on either side. (Before, any setting made key: the analysis assumed equal
    detectors and only alarmed beyond ~10 %.)"""
    s, alice = _run_mismatched(tmp_path, 0.77)
    [b] = s["block_results"]
    assert not b["aborted"] and b["secret_bits"] > 0, b
    # (most of one block's key refills the authentication pools: the stores may hold none yet)
    assert s["keys"]["alice"] == s["keys"]["bob"]
    fkt = b["finite_key"]
    assert fkt["tagged_z"] > 0.2 * b["n_z"] and fkt["tagged_x"] > 0
    assert not any(a["alarm"] == "detector_mismatch" for a in alice.alarms)
    assert 0.42 < alice.results[0].yields["ones_x"] < 0.45

    s, alice = _run_mismatched(tmp_path, 0.9)
    [b] = s["block_results"]
    assert b["aborted"] and "detector_efficiency_ratio_min" in b["reason"], b
    assert s["secret_bits"] == 0 and s["keys"] == {"alice": 0, "bob": 0}
    msg = [a["reason"] for a in alice.alarms if a["alarm"] == "detector_mismatch"]
    assert len(msg) == 1 and "X-basis" in msg[0] and "below detector_efficiency_ratio_min 0.900" in msg[0]
