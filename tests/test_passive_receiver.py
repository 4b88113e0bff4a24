"""The passive receiver's multi-photon bound (link.finite_key, "Measurement model").

A beam splitter sending a share p of the light to Bob's Z arm routes n photons all to Z with
probability p^n, all to X with q^n, else to both arms (a cross click). Bob's Z-only and X-only
detections from n >= 2 photons are bounded from the observed cross clicks. These tests drive
that routing in numpy, with Eve choosing the photon number that hides the most (n = 2), and
check the bounds hold, are not loose, and that the finite-key step, the node's message and the
config use them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from link import finite_key as fk
from link.config import ConfigError, parse_node_file
from link.node import NodeConfig, receiver_counts
from link.payload import PayloadError


def _route(rng, n_photons: np.ndarray, p: float):
    """Per round: all photons in Z (0), all in X (1), or both arms (2); photons routed
    independently with probability p to Z (the splitter's a^dag -> sqrt(p) b^dag + sqrt(q) c^dag)."""
    to_z = rng.binomial(n_photons, p)
    return np.where(to_z == n_photons, 0, np.where(to_z == 0, 1, 2))


@pytest.mark.parametrize("p", [0.5, 0.85, 0.9])
def test_routing_probabilities_are_p_to_the_n(p):
    # the premise of the bound: all-Z p^n, all-X q^n, cross 1 - p^n - q^n (n = 2, 3)
    rng = np.random.default_rng(7)
    for n in (2, 3):
        r = _route(rng, np.full(400_000, n), p)
        for outcome, expect in ((0, p**n), (1, (1 - p) ** n), (2, 1 - p**n - (1 - p) ** n)):
            got = float((r == outcome).mean())
            assert abs(got - expect) < 5 * math.sqrt(expect * (1 - expect) / r.size) + 1e-4


@pytest.mark.parametrize("p,alice_p_z", [(0.5, 0.5), (0.85, 0.5), (0.9, 0.9)])
def test_bounds_hold_for_two_photon_attack_and_are_tight(p, alice_p_z):
    """Eve sends two photons in every attacked round (the worst case: the largest share of
    single-arm events per cross click). The bounds must hold in every trial (eps 1e-3 each)
    and stay within ~15 % of the truth."""
    rng = np.random.default_rng(11)
    worst, best = 0.0, 1.0
    for _ in range(60):
        rounds = 40_000
        routed = _route(rng, np.full(rounds, 2), p)
        cross = int((routed == 2).sum())
        # Alice sent one photon in all of them (Eve's best case) and chose Z with alice_p_z
        alice_z = rng.random(rounds) < alice_p_z
        z_sifted = int(((routed == 0) & alice_z).sum())
        x_sifted = int(((routed == 1) & ~alice_z).sum())
        events = rounds + 1_000_000          # plus the honest single-photon events
        bz, bx = fk.multiphoton_detection_bounds(fk.PassiveReceiver(p, cross, events, alice_p_z), 1e-3)
        assert z_sifted <= bz and x_sifted <= bx
        worst = max(worst, z_sifted / bz)
        best = min(best, z_sifted / bz)
    assert worst > 0.85, f"Z bound loose: truth / bound at most {worst:.3f}"


def test_a_bound_ignoring_two_photons_would_fail():
    # the check above can fail: if r_Z were taken for n = 3 (as if Eve could not send two
    # photons), two-photon rounds exceed it
    p, rounds = 0.85, 40_000
    q = 1 - p
    routed = _route(np.random.default_rng(3), np.full(rounds, 2), p)
    cross, z_only = int((routed == 2).sum()), int((routed == 0).sum())
    s3 = 1 - p**3 - q**3
    r3 = s3 / (1 - q**3)
    assert z_only > cross * (1 - r3) / r3 * 1.2
    bz, _ = fk.multiphoton_detection_bounds(fk.PassiveReceiver(p, cross, rounds, 0.999), 1e-3)
    assert z_only <= bz


def test_no_cross_clicks_leaves_only_the_statistical_term():
    bz, bx = fk.multiphoton_detection_bounds(fk.PassiveReceiver(0.5, 0, 10**6, 0.5), 1e-11)
    # T_max(0) = v L / r^2 with v = 1/2, r = 2/3: ~ 31 events, half sifted plus the deviation
    assert 0 < bz == bx < 60
    bz2, _ = fk.multiphoton_detection_bounds(fk.PassiveReceiver(0.5, 1000, 10**6, 0.5), 1e-11)
    assert bz2 > bz + 250          # grows like C p/(2q) p_A


def test_receiver_validation():
    with pytest.raises(ValueError, match="split_z"):
        fk.PassiveReceiver(1.0, 0, 1, 0.5)
    with pytest.raises(ValueError, match="alice_p_z"):
        fk.PassiveReceiver(0.5, 0, 1, 0.0)
    with pytest.raises(ValueError, match="cross_clicks"):
        fk.PassiveReceiver(0.5, 5, 4, 0.5)


def _counts():
    # a metro-25km-like 2-decoy block (mu 0.5/0.1/0.0002, probs 0.5/0.3/0.2)
    key = fk.BasisCounts((800_000, 60_000, 300), (2_400, 300, 150))
    test = fk.BasisCounts((150_000, 11_000, 60), (450, 60, 30))
    return key, test, fk.DecoySettings((0.5, 0.1, 0.0002), (0.5, 0.3, 0.2))


def test_finite_key_takes_the_multiphoton_events_off():
    key, test, decoy = _counts()
    active = fk.secret_key_length(key, test, decoy, leak_ec_bits=30_000)
    rx = fk.PassiveReceiver(0.85, 20_000, 2_500_000, 0.5)
    passive = fk.secret_key_length(key, test, decoy, leak_ec_bits=30_000, receiver=rx)
    bz, bx = fk.multiphoton_detection_bounds(rx, 1e-10 / fk.eps_terms("2-decoy", True))
    b_active = fk.single_photon_bounds(key, test, decoy, eps_sec=1e-10, protocol="2-decoy")
    assert passive.extra["multiphoton_z"] == pytest.approx(bz)
    assert passive.extra["multiphoton_x"] == pytest.approx(bx)
    # s1 is the active one minus B_Z, with the budget's eps (25 terms instead of 21)
    eps25 = fk.single_photon_bounds(key, test, decoy, eps_sec=1e-10 * 21 / 25, protocol="2-decoy")
    assert passive.s1 == pytest.approx(eps25["s1"] - bz)
    assert passive.s1_test == pytest.approx(eps25["s1_test"] - bx)
    assert 0 < passive.ell < active.ell
    assert b_active["s1"] - passive.s1 > bz          # and a little more for the smaller eps
    # the budget keeps its total: four more parameter-estimation terms, same eps_sec
    assert passive.eps.parameter_estimation + passive.eps.privacy_amplification == pytest.approx(1e-10)
    assert passive.eps.parameter_estimation == pytest.approx(1e-10 * 20 / 25)
    # more cross clicks, less key
    more = fk.secret_key_length(key, test, decoy, leak_ec_bits=30_000,
                                receiver=fk.PassiveReceiver(0.85, 60_000, 2_500_000, 0.5))
    assert more.ell < passive.ell


def test_node_requires_the_cross_clicks_of_a_passive_receiver():
    cfg = NodeConfig(receiver_split_z=0.85, p_z=0.5)
    rx = receiver_counts(cfg, {"n_x": 5, "cross_clicks": 7, "events": 100, "announced": [80, 13]})
    assert rx == fk.PassiveReceiver(0.85, 7, 100, 0.5, (80, 13))
    for bad in ({"n_x": 5}, {"cross_clicks": 7}, {"cross_clicks": -1, "events": 100},
                {"cross_clicks": 7.0, "events": 100}, {"cross_clicks": True, "events": 100},
                {"cross_clicks": 101, "events": 100}):
        with pytest.raises(PayloadError, match="cross_clicks"):
            receiver_counts(cfg, {**bad, "announced": [0, 0]})
    assert receiver_counts(NodeConfig(receiver="active"), {}) is None


def _node_file(protocol: str) -> dict:
    import tomllib
    return tomllib.loads(f"""
[node]
role = "alice"
link_id = "l"
psk = "a.psk"
store = "a.db"
[channel]
proto = "tcp://127.0.0.1:7100"
ctrl = "tcp://127.0.0.1:7101"
[protocol]
{protocol}
[frontend]
lab = "lab.toml"
instrument = "pattern_generator"
frame_slots = 1024
clock_hz = 1e9
""")


def test_config_receiver_settings(tmp_path):
    nf = parse_node_file(_node_file('receiver = "passive"\nreceiver_split_z = 0.85'), tmp_path / "n.toml")
    assert (nf.protocol.receiver, nf.protocol.receiver_split_z) == ("passive", 0.85)
    assert parse_node_file(_node_file(""), tmp_path / "n.toml").protocol.receiver == "passive"
    with pytest.raises(ConfigError, match="protocol.receiver"):
        parse_node_file(_node_file('receiver = "pasive"'), tmp_path / "n.toml")
    with pytest.raises(ConfigError, match="protocol.receiver_split_z"):
        parse_node_file(_node_file("receiver_split_z = 1.0"), tmp_path / "n.toml")


def test_split_range_takes_in_the_measured_share():
    rx = fk.PassiveReceiver(0.5, 1000, 10**6, 0.5, (850_000, 149_000))
    lo, hi = rx.split_range(1e-10)
    assert rx.measured_split == pytest.approx(0.85085, abs=1e-4)
    assert lo == 0.5 and 0.851 < hi < 0.856
    # the Z bound uses the top of the range: as if the split were configured right
    wide = fk.multiphoton_detection_bounds(rx, 1e-10)
    right = fk.multiphoton_detection_bounds(fk.PassiveReceiver(hi, 1000, 10**6, 0.5), 1e-10)
    assert wide[0] == pytest.approx(right[0])
    # and the X bound its bottom (the configured 0.5)
    assert wide[1] == pytest.approx(fk.multiphoton_detection_bounds(
        fk.PassiveReceiver(0.5, 1000, 10**6, 0.5), 1e-10)[1])
    # a measured share inside the configured one changes nothing
    same = fk.PassiveReceiver(0.85, 1000, 10**6, 0.5, (850_000, 149_000))
    assert same.split_range(1e-10)[0] < 0.85 < same.split_range(1e-10)[1] + 1e-12
    with pytest.raises(ValueError, match="announced"):
        fk.PassiveReceiver(0.85, 1000, 10**6, 0.5, (10**6, 0))


def test_node_refuses_malformed_announced_counts():
    cfg = NodeConfig(receiver_split_z=0.85)
    ok = {"cross_clicks": 7, "events": 100}
    assert receiver_counts(cfg, {**ok, "announced": [80, 13]}).announced == (80, 13)
    for bad in (None, [80], [80, -1], [80, 14], [80.0, 13], "80,13"):
        with pytest.raises(PayloadError, match="announced"):
            receiver_counts(cfg, {**ok, "announced": bad})


def test_receiver_checked_against_the_data(tmp_path):
    """A block on the model with Bob's V detector at 0.50 (H 0.70) and receiver_split_z left
    at 0.5 on an 85:15 splitter: both alarms, and no key: a measured share above the setting
    means the setting is too low for the multi-photon bound, and widening it to the measured
    share is no safe repair (dark counts and dead time pull that share down; audit
    2026-11-25). Before, the block made key on the widened split."""
    from hil.model import LinkModel
    from link.pipeline import config_for_scenario, run_local

    src = Path(__file__).resolve().parents[1] / "hil" / "scenarios" / "metro-25km.toml"
    text = src.read_text().replace("efficiency = [0.70, 0.68, 0.71, 0.69]",
                                   "efficiency = [0.70, 0.50, 0.71, 0.69]")
    assert "0.50, 0.71" in text
    scen = tmp_path / "mismatch.toml"
    scen.write_text(text)
    nodes: dict = {}

    def attach(held):
        nodes.update(held)
        return lambda: None

    cfg = config_for_scenario(LinkModel(str(scen)).scenario, block_bits=1 << 19, receiver_split_z=0.5)
    s = run_local(str(scen), config=cfg, blocks=1, duration_s=60, workdir=tmp_path / "run", attach=attach)
    kinds = [a["alarm"] for a in nodes["alice"].alarms]
    assert "receiver_split" in kinds and "detector_mismatch" in kinds, kinds
    msg = next(a["reason"] for a in nodes["alice"].alarms if a["alarm"] == "detector_mismatch")
    assert "Bob's V and H detectors differ" in msg and "0." not in msg.split("detectors")[1]
    assert sum(a["alarm"] == "detector_mismatch" for a in nodes["alice"].alarms) == 1   # not X
    y = nodes["alice"].results[0].yields
    assert 0.80 < y["measured_split_z"] < 0.86 and abs(y["ones_x"] - 0.5) < 0.02
    assert "ones_z" not in y             # the key's weight is not published
    assert s["block_results"] and all(r["aborted"] and "receiver_split_z" in r["reason"]
                                      for r in s["block_results"])
    assert s["secret_bits"] == 0 and s["keys"] == {"alice": 0, "bob": 0}
    assert "too low for the multi-photon bound" in next(
        a["reason"] for a in nodes["alice"].alarms if a["alarm"] == "receiver_split")
