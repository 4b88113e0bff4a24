"""``qkd kme --config``: two standalone KME processes over the two nodes' key stores.

Each process reads a node file with a ``[kme]`` table, serves its SAE over
mutual TLS and reserves keys at the other over mutual TLS (``HttpsPeer``).
Bad ``[kme]`` tables are refused with the file and the dotted key named.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_kme import call

from link.cli import main
from link.config import ConfigError, load_node_file
from link.pki import create_lab_pki

NODE = """
[node]
role = "{role}"
link_id = "hil-metro-25km"
psk = "link.psk"
store = "{role}.db"

[channel]
proto = "tcp://127.0.0.1:7100"
ctrl = "tcp://127.0.0.1:7101"

[frontend]
lab = "lab.toml"
instrument = "x"
frame_slots = 1024
clock_hz = 1e9
dead_time_ns = 50.0

[kme]
kme_id = "{me}"
peer_kme_id = "{peer}"
listen = "127.0.0.1:{port}"
cert = "pki/{me}.pem"
key = "pki/{me}.key"
ca = "pki/ca.pem"
reservations = "{role}-kme.db"
peer_url = "https://127.0.0.1:{peer_port}"
key_size = 256
[kme.saes]
{sae} = ["{partner}"]

[metrics]
port = 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(d: Path, role: str, port: int, peer_port: int, **over) -> Path:
    me, peer, sae, partner = (("KME_A", "KME_B", "SAE_A", "SAE_B") if role == "alice"
                              else ("KME_B", "KME_A", "SAE_B", "SAE_A"))
    text = NODE.format(role=role, me=me, peer=peer, port=port, peer_port=peer_port, sae=sae, partner=partner)
    for old, new in over.items():
        text = text.replace(old.replace("__", " "), new)
    p = d / f"{role}.toml"
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # both nodes' stores as a committed block leaves them (the engine's KeyStore; the engine
    # run itself is tested elsewhere): the same block key, prepared and committed on each side
    from link.keystore import KeyStore

    d = tmp_path_factory.mktemp("run")
    block = bytearray(os.urandom(64 * 32))
    for role in ("alice", "bob"):
        st = KeyStore(d / f"{role}.db", "hil-metro-25km")
        st.prepare(1, block, len(block) * 8)
        assert st.commit(1) == 64
        st.close()
    block[:] = bytes(len(block))
    create_lab_pki(d / "pki", kmes=["KME_A", "KME_B"], saes=["SAE_A", "SAE_B"])
    return d


def _spawn(cfg: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "link.cli", "kme", "--config", str(cfg), "--duration", "60"]
    # cwd away from the source tree: with a non-editable install (CI) the tree's own postproc_c
    # (no compiled core) would shadow the installed package
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cfg.parent)


def _started(p: subprocess.Popen) -> str:
    line = p.stdout.readline()
    if "at https://" not in line:
        p.kill()
        raise AssertionError(f"qkd kme did not start: {line!r} {p.stderr.read()}")
    return line


def test_two_standalone_kmes_serve_identical_keys(run_dir):
    from link.keystore import KeyStore

    pa, pb = _free_port(), _free_port()
    ca, cb = _write(run_dir, "alice", pa, pb), _write(run_dir, "bob", pb, pa)
    n0 = KeyStore(run_dir / "alice.db", "hil-metro-25km").available()
    procs = [_spawn(ca), _spawn(cb)]     # both start at once
    try:
        for p in procs:
            line = _started(p)
            assert "hil-metro-25km" in line and f"{n0} keys" in line
        pki = run_dir / "pki"
        st, status = call(pki, pa, "GET", "/api/v1/keys/SAE_B/status")
        assert st == 200 and status["source_KME_ID"] == "KME_A" and status["target_KME_ID"] == "KME_B"
        st, enc = call(pki, pa, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 3, "size": 512})
        assert st == 200, enc
        st, dec = call(pki, pb, "POST", "/api/v1/keys/SAE_A/dec_keys",
                       {"key_IDs": [{"key_ID": k["key_ID"]} for k in enc["keys"]]}, sae="SAE_B")
        assert st == 200 and dec["keys"] == enc["keys"]
        # an SAE certificate may not pose as the peer KME to reserve keys
        st, err = call(pki, pb, "POST", "/kme/v1/reserve", {"master_SAE_ID": "SAE_A", "slave_SAE_ID": "SAE_B",
                                                            "keys": []}, sae="SAE_A")
        assert st == 401 and "KME_A" in err["message"]
    finally:
        for p in procs:
            p.terminate()
        outs = [p.communicate(timeout=20)[0] for p in procs]
    assert "enc_keys 3" in outs[0] and "dec_keys 3" in outs[1]
    a, b = KeyStore(run_dir / "alice.db", "hil-metro-25km"), KeyStore(run_dir / "bob.db", "hil-metro-25km")
    assert a.available() == b.available() == n0 - 6   # 3 keys of 512 bits = 6 store keys each side
    assert a.fingerprint() == b.fingerprint()


@pytest.mark.parametrize("old,new,key", [
    ('cert = "pki/KME_A.pem"', 'cert = "pki/nope.pem"', "kme.cert"),
    ('listen = "127.0.0.1:1"', 'listen = "localhost"', "kme.listen"),
    ('key_size = 256', 'key_size = 100', "kme.key_size"),
    ('key_size = 256', 'key_size = 8192', "kme.key_size"),
    ('peer_kme_id = "KME_B"', 'peer_kme_id = "KME_A"', "kme.peer_kme_id"),
    ('SAE_A = ["SAE_B"]', 'SAE_A = "SAE_B"', "kme.saes.SAE_A"),
    ('SAE_A = ["SAE_B"]', 'SAE_A = ["SAE_A"]', "kme.saes.SAE_A"),
    ('peer_url = "https', 'peer_url = "http', "kme.peer_url"),
    ('key_size = 256', 'colour = "red"', "kme.colour"),
    ("port = 0", "port = 70000", "metrics.port"),
])
def test_bad_kme_tables_name_file_and_key(run_dir, old, new, key):
    p = _write(run_dir, "alice", 1, 2)
    p.write_text(p.read_text().replace(old, new))
    with pytest.raises(ConfigError) as e:
        load_node_file(p)
    assert e.value.key == key and str(p) in str(e.value)


def test_qkd_kme_without_kme_table(run_dir, capsys):
    p = _write(run_dir, "alice", 1, 2)
    p.write_text(p.read_text().split("[kme]")[0])
    assert load_node_file(p).kme is None
    assert main(["kme", "--config", str(p)]) == 2
    assert "[kme]: missing table" in capsys.readouterr().err


def test_qkd_kme_with_a_corrupt_reservation_store(run_dir, capsys):
    # was a sqlite3.DatabaseError traceback; now the file and the cause are named, exit 2
    p = _write(run_dir, "alice", _free_port(), 2, **{"alice-kme.db": "broken-kme.db"})
    (run_dir / "broken-kme.db").write_bytes(b"not a database " * 100)
    assert main(["kme", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "broken-kme.db" in err and "corrupt" in err


def test_qkd_pki_into_a_folder_it_cannot_make_names_it(tmp_path, capsys):
    # --out naming a file (or a folder without permission) was a FileExistsError traceback
    (tmp_path / "afile").write_text("x")
    assert main(["pki", "--out", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert f"qkd pki: cannot write {tmp_path / 'afile'}: File exists" in err, err
