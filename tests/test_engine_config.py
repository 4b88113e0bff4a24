"""Node files: a corrupt or missing config gives an error naming the file and the key."""

from __future__ import annotations

import pytest

from link.cli import main
from link.config import ConfigError, load_node_file

GOOD = """
[node]
role = "alice"
link_id = "lab-1"
psk = "alice.psk"
store = "alice.db"
[channel]
proto = "tcp://0.0.0.0:7100"
ctrl = "tcp://0.0.0.0:7101"
[protocol]
block_bits = 524288
intensities = [0.5, 0.1, 0.0002]
intensity_probs = [0.5, 0.3, 0.2]
[frontend]
lab = "lab.toml"
instrument = "pattern_generator"
frame_slots = 262144
clock_hz = 1e9
dead_time_ns = 50.0
"""


def _write(tmp_path, text):
    p = tmp_path / "node.toml"
    p.write_text(text)
    return p


def test_good_file_loads_with_paths_relative_to_it(tmp_path):
    nf = load_node_file(_write(tmp_path, GOOD))
    assert nf.role == "alice" and nf.psk == tmp_path / "alice.psk" and nf.store == tmp_path / "alice.db"
    assert nf.protocol.block_bits == 524288 and nf.protocol.intensity_probs == (0.5, 0.3, 0.2)
    assert nf.protocol.key_size_bits == 256 and nf.channel.retry_s == 0.2


@pytest.mark.parametrize("old,new,key,words", [
    ('role = "alice"', 'role = "carol"', "node.role", '"alice" or "bob"'),
    ('block_bits = 524288', 'block_bits = "big"', "protocol.block_bits", "integer"),
    ('block_bits = 524288', 'block_bits = -4', "protocol.block_bits", "> 0"),
    ('proto = "tcp://0.0.0.0:7100"', 'proto = "0.0.0.0:7100"', "channel.proto", "ZeroMQ endpoint"),
    ('clock_hz = 1e9', 'clock_hz = true', "frontend.clock_hz", "Hz"),
    ('intensity_probs = [0.5, 0.3, 0.2]', 'intensity_probs = [0.5, 0.3, 0.3]', "protocol.intensity_probs",
     "summing to 1"),
    ('intensities = [0.5, 0.1, 0.0002]', 'intensities = [0.1, 0.5, 0.0002]', "protocol.intensities",
     "mu1 > mu2"),
    ('[protocol]', '[protocol]\nreconciliation = "magic"', "protocol.reconciliation", "one of"),
    ('[protocol]', '[protocol]\nblock_size = 3', "protocol.block_size", "unknown key"),
    ('link_id = "lab-1"\n', '', "node.link_id", "missing"),
    ('[frontend]', '[frontendz]', "frontendz", "unknown key"),
    ('[channel]', '[chan]', "chan", "unknown key"),
    ('dead_time_ns = 50.0', 'dead_time_ns = -1.0', "frontend.dead_time_ns", "dead time"),
])


def test_bad_values_name_file_and_key(tmp_path, old, new, key, words):
    assert old in GOOD
    p = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as ei:
        load_node_file(p)
    msg = str(ei.value)
    assert str(p) in msg and key in msg and words in msg, msg


def test_bobs_dead_time_is_checked(tmp_path):
    # Bob keeps an event only if every detector was live (link.slotting): a dead time <= 0 is a
    # mistake; absent, qkd bob takes the timing record's or refuses (tests/test_cli_lab_timing.py)
    bob = GOOD.replace('role = "alice"', 'role = "bob"')
    with pytest.raises(ConfigError, match="must be > 0") as ei:
        load_node_file(_write(tmp_path, bob.replace("dead_time_ns = 50.0", "dead_time_ns = 0")))
    assert "frontend.dead_time_ns" in str(ei.value) and "dead time" in str(ei.value)
    assert load_node_file(_write(tmp_path, bob)).frontend.dead_time_ns == 50.0
    absent = load_node_file(_write(tmp_path, bob.replace("dead_time_ns = 50.0\n", "")))
    assert absent.frontend.dead_time_ns is None


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml.*cannot read"):
        load_node_file(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"node\.toml: \[frontend\]: missing table"):
        load_node_file(_write(tmp_path, GOOD.split("[frontend]")[0]))
    with pytest.raises(ConfigError, match=r"node\.toml.*not valid TOML"):
        load_node_file(_write(tmp_path, "[node\nrole = 1"))


def test_qkd_alice_reports_config_errors(tmp_path, capsys):
    p = _write(tmp_path, GOOD.replace('role = "alice"', 'role = "bob"'))
    assert main(["alice", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "node.role" in err
    assert main(["bob", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_qkd_psk_writes_a_pair(tmp_path, capsys):
    from link.auth import read_psk
    a, b = tmp_path / "a.psk", tmp_path / "b.psk"
    assert main(["psk", "--link-id", "L7", "--out", str(a), str(b), "--kib-per-stream", "1"]) == 0
    ia, sa = read_psk(a)
    ib, sb = read_psk(b)
    assert ia == ib == "L7" and sa == sb and len(sa["alice.proto.data"]) == 1024
    assert "L7" in capsys.readouterr().out


def test_auto_reconciliation_picks_by_estimated_qber(tmp_path):
    from link.node import NodeConfig, choose_reconciliation

    text = GOOD.replace('block_bits = 524288', 'block_bits = 524288\nreconciliation = "auto"\n'
                        'auto_ldpc_qber = [0.02, 0.05]')
    cfg = load_node_file(_write(tmp_path, text)).protocol
    assert cfg.reconciliation == "auto" and cfg.auto_ldpc_qber == (0.02, 0.05)
    assert [choose_reconciliation(cfg, q) for q in (0.003, 0.02, 0.049, 0.05, 0.08)] == \
        ["cascade", "ldpc", "ldpc", "cascade", "cascade"]
    assert choose_reconciliation(NodeConfig(reconciliation="auto"), 0.01) == "cascade"  # empty window
    assert choose_reconciliation(NodeConfig(reconciliation="ldpc"), 0.001) == "ldpc"  # fixed
    with pytest.raises(ConfigError, match="auto_ldpc_qber"):
        load_node_file(_write(tmp_path, text.replace("[0.02, 0.05]", "[0.05, 0.02]")))
