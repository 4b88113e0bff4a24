"""``qkd alice`` and ``qkd bob`` (two processes) start their KMEs and metrics from the node file.

The nodes drive the HIL rig's emulated instruments through the production
drivers (as against a lab); each node file has ``[kme]`` and ``[metrics]``
tables. While the link runs, a master SAE takes keys from Alice's KME, the
slave SAE fetches them by ID from Bob's (the reservation crossed the link's
authenticated channel between the two processes), and Alice's Prometheus
endpoint is scraped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from rig_nodes import store_key_count, write_node_files
from test_kme import call

from hil.rig import Rig
from link.pipeline import config_for_scenario
from link.pki import create_lab_pki

KME = """
[kme]
kme_id = "{me}"
peer_kme_id = "{peer}"
listen = "127.0.0.1:0"
cert = "pki/{me}.pem"
key = "pki/{me}.key"
ca = "pki/ca.pem"
reservations = "{role}-kme.db"
[kme.saes]
{sae} = ["{partner}"]

[metrics]
port = 0
"""


class _Lines:
    """A child's stdout, read on a thread, searchable while it runs."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.t.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line)

    def wait_for(self, word: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.lines:
                if word in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{word!r} not printed in {timeout} s: {''.join(self.lines)[-2000:]}")


def test_qkd_alice_and_bob_serve_keys_through_their_kmes(tmp_path):
    create_lab_pki(tmp_path / "pki", kmes=["KME_A", "KME_B"], saes=["SAE_A", "SAE_B"])
    from link.cli import main
    assert main(["psk", "--link-id", "lab-link", "--out", str(tmp_path / "alice.psk"),
                 str(tmp_path / "bob.psk"), "--kib-per-stream", "16"]) == 0
    procs: list[subprocess.Popen] = []
    with Rig("metro-25km", seed=3) as rig:
        cfg = config_for_scenario(rig.model.scenario, block_bits=1 << 19)   # key from 2^19 on at 25 km
        kme = {role: KME.format(role=role, me=me, peer=peer, sae=sae, partner=partner)
               for role, me, peer, sae, partner in (("alice", "KME_A", "KME_B", "SAE_A", "SAE_B"),
                                                    ("bob", "KME_B", "KME_A", "SAE_B", "SAE_A"))}
        write_node_files(tmp_path, rig, cfg, kme)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            out = {}
            for role in ("alice", "bob"):
                p = subprocess.Popen([sys.executable, "-m", "link.cli", role, "--config",
                                      str(tmp_path / f"{role}.toml")], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
                procs.append(p)
                out[role] = _Lines(p)
            url_a = out["alice"].wait_for("KME KME_A at https://").split(" at ")[1].split()[0]
            url_b = out["bob"].wait_for("KME KME_B at https://").split(" at ")[1].split()[0]
            metrics = out["alice"].wait_for("metrics on http://").split(" on ")[1].strip()
            pa, pb = int(url_a.rsplit(":", 1)[1]), int(url_b.rsplit(":", 1)[1])
            end = time.monotonic() + 150
            while min(store_key_count(tmp_path / f"{r}.db") for r in ("alice", "bob")) < 10:
                assert time.monotonic() < end, "no key in both stores: " + "".join(out["alice"].lines)[-1500:]
                assert all(p.poll() is None for p in procs), "".join(out["bob"].lines)[-1500:]
                time.sleep(0.2)
            pki = tmp_path / "pki"
            st, enc = call(pki, pa, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 2, "size": 512})
            assert st == 200, enc
            st, dec = call(pki, pb, "POST", "/api/v1/keys/SAE_A/dec_keys",
                           {"key_IDs": [{"key_ID": k["key_ID"]} for k in enc["keys"]]}, sae="SAE_B")
            assert st == 200 and dec["keys"] == enc["keys"]
            time.sleep(0.7)   # the next status telemetry
            body = urllib.request.urlopen(metrics, timeout=5).read().decode()
            assert 'qkd_kme_keys_served_total{call="enc_keys",node="alice"} 2.0' in body
            assert 'qkd_blocks_total{node="alice",result="ok"}' in body
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_qkd_alice_with_a_corrupt_kme_reservation_store_is_refused_naming_it(tmp_path, capsys):
    """The node file's [kme] reservations file is not a database: `qkd alice` stops with a
    message naming it and exit 2, not a sqlite3 traceback (its instruments are the rig's)."""
    from link.cli import main

    create_lab_pki(tmp_path / "pki", kmes=["KME_A", "KME_B"], saes=["SAE_A", "SAE_B"])
    assert main(["psk", "--link-id", "lab-link", "--out", str(tmp_path / "alice.psk"),
                 str(tmp_path / "bob.psk"), "--kib-per-stream", "16"]) == 0
    (tmp_path / "alice-kme.db").write_bytes(b"this is not an SQLite file" * 100)
    with Rig("metro-25km", seed=3) as rig:
        cfg = config_for_scenario(rig.model.scenario, block_bits=1 << 19)
        write_node_files(tmp_path, rig, cfg, {"alice": KME.format(role="alice", me="KME_A", peer="KME_B",
                                                                  sae="SAE_A", partner="SAE_B")})
        capsys.readouterr()
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            rc = main(["alice", "--config", str(tmp_path / "alice.toml")])
        finally:
            os.chdir(cwd)
    out = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out.err + out.out
    assert "cannot start the node's services" in out.err and "alice-kme.db" in out.err, out.err


def test_sigterm_stops_a_node_cleanly_like_ctrl_c(tmp_path):
    """`kill PID` / `systemctl stop` send SIGTERM: the node stops as on Ctrl-C (exit 0, its store
    closed: no -wal beside it, the lock released). Without a handler the process ended at once,
    leaving bob.db-wal/-shm (seen in the README walkthrough)."""
    from link.cli import main

    assert main(["psk", "--link-id", "lab-link", "--out", str(tmp_path / "alice.psk"),
                 str(tmp_path / "bob.psk"), "--kib-per-stream", "16"]) == 0
    with Rig("metro-25km", seed=3) as rig:
        write_node_files(tmp_path, rig, config_for_scenario(rig.model.scenario, block_bits=1 << 19))
        cmd = [sys.executable, "-m", "link.cli", "bob", "--config", str(tmp_path / "bob.toml")]
        p = subprocess.Popen(cmd,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            out = _Lines(p)
            out.wait_for("] frames ")                  # started: the status line is printed
            assert (tmp_path / "bob.db-wal").exists()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        out.t.join(5)
    assert rc == 0, "".join(out.lines)[-2000:]
    assert not (tmp_path / "bob.db-wal").exists() and not (tmp_path / "bob.db-shm").exists()
    assert "Traceback" not in "".join(out.lines)
    assert "qkd bob: stopped, 0 keys in " in out.lines[-1], out.lines[-3:]   # its last line says so
