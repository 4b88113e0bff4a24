"""``qkd bob --config`` with ``[calibration] track_polarization = true``: the tracker is built from the lab
file's controller (EPC-400 or MPC320, production driver on the HIL rig's emulated instrument) and runs
in a real two-process link (``qkd alice`` and ``qkd bob``, TCP channel, the rig's AWG/tagger twins).

The rig's fiber is turned by a small fixed rotation (the lab would run ``qkd calibrate polarization``
first); the rig makes a block every ~2 s of wall time here, so the run is short: it checks the wiring
(lab file -> driver -> tracker -> node hook -> controller moves), not the tracking figures (bench).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from rig_nodes import write_node_files

from hil.optics import su2_rotation
from hil.rig import Rig
from hil.scenario import Scenario
from link.pipeline import config_for_scenario

CAL = """
[calibration]
track_polarization = true
controller = "{controller}"
"""


@pytest.mark.parametrize("controller,role_name", [("epc400", "polarization"), ("mpc320", "paddles")])
def test_qkd_bob_tracks_with_the_lab_files_controller(tmp_path, controller, role_name):
    from link.cli import main

    assert main(["psk", "--link-id", "lab-link", "--out", str(tmp_path / "alice.psk"),
                 str(tmp_path / "bob.psk"), "--kib-per-stream", "128"]) == 0
    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": 0.0})
    blocks = 8
    with Rig(sc, seed=5, controller=controller) as rig:
        fiber = su2_rotation(np.array([0.02, -0.03, 0.02]))        # harness only: a nearly aligned fiber
        rig.model.fiber.rotation_at = lambda t: fiber
        cfg = config_for_scenario(rig.model.scenario, block_bits=1 << 15)
        write_node_files(tmp_path, rig, cfg, {"bob": CAL.format(controller=role_name)})
        server = rig.lab.servers[f"bob.{role_name}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = {}
        try:
            procs["alice"] = subprocess.Popen(
                [sys.executable, "-m", "link.cli", "alice", "--config", str(tmp_path / "alice.toml"),
                 "--blocks", str(blocks), "--json"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env=env, cwd=tmp_path)
            procs["bob"] = subprocess.Popen(
                [sys.executable, "-m", "link.cli", "bob", "--config", str(tmp_path / "bob.toml"), "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
            out = {k: p.communicate(timeout=240)[0] for k, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
        print(out["bob"][-3000:])
        assert procs["bob"].returncode == 0, out["bob"][-2000:]
        want = "EPC-400@" if controller == "epc400" else "MPC320@"
        assert f"qkd bob: polarization tracking with bob.{role_name}:{want}" in out["bob"]
        st = json.loads(out["bob"].strip().splitlines()[-1])
        pt = st["polarization_tracking"]
        print(pt)
        moved = len(server.history) if controller == "epc400" else server.moves
        assert pt["blocks"] >= blocks // 2 and pt["used"] > 0 and moved > 1     # it dithered
        assert pt["on"] and "polarization" not in st["alarms"] and pt["recoveries"] == 0
        lo, hi = (-5000, 5000) if controller == "epc400" else (0, 170)
        assert all(lo <= v <= hi for v in pt["settings"])
        from hil.blocklink import stokes

        r = stokes(rig.model.rotation_at(0.0))                  # still aligned after the dithers
        assert (1 - r[0, 0]) / 2 < 0.01 and (1 - r[1, 1]) / 2 < 0.01
