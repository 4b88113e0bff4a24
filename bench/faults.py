"""Fault-injection suite (issue 9, "Faults"): instrument faults on the rig, kill -9 of the link process.

    python -m bench.faults                      # everything: 17 instrument faults, 12 + 12 kills
    python -m bench.faults --kills 30 --seed 7  # more kills
    python -m bench.faults --no-instruments --kills 5 --node-kills 20

Prints one row per run: fault, where it hit, outcome (alarms, keys on each side,
stores identical, committed keys kept). Instrument faults: Alice's AWG and Bob's
tagger inside the pipeline; Bob's SNSPD and ID120 detector controllers and MPC320
read back by ``link.instrument_watch``, his EPC-400 driven by the tracking loop,
each disconnected, answering garbage or stalled once the first keys are committed.
The tests (tests/test_faults_*.py) run a small sample of the same harness in CI.

Kill -9 of the node process: both nodes run in one child process
(``run_local``, the HIL model as instruments) on a work directory that
survives the process; the parent kills the child with SIGKILL at a random
moment, reads both stores as the crash left them, checks the commit-protocol
invariant (every block Bob committed, Alice committed), then restarts the
child on the same directory. The recovery (RESYNC) must settle every
half-done block: at the end both stores are identical and hold every key
either side had committed before any of the kills. A restart can itself be
killed. Killing the one process that runs both models the machine going down.

Kill -9 of ONE node (``--node-kills``, ``bench.node_restart``): Alice and Bob
in their own processes joined by an emulated fiber; one is killed and
restarted alone while the other runs (``link.resume`` re-synchronises frame
numbers; commits and pool positions resync as above). (On the rig a lone
restart is not possible: its AWG and tagger number frames by upload order.)

What it must not do: leave processes behind (every child is killed and
reaped), or print key material (only key IDs are compared).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK_BITS = 1 << 19  # the shortest blocks that still give key at 25 km (link.pipeline.config_for_scenario)


# -- instrument faults on the rig ---------------------------------------------------------------
def _awg(rig):
    return rig.lab.servers["alice.pattern_generator"]


INSTRUMENT_FAULTS = {
    # name: (what to do to the rig, words the instrument alarm must contain)
    "tagger_drop": (lambda rig: rig.tagger.faults.set(drop=1), ("bob", "PicoQuant", "closed the connection")),
    "tagger_garbage": (lambda rig: rig.tagger.faults.set(garbage=1), ("bob", "PicoQuant", "corrupted")),
    "awg_error": (lambda rig: _awg(rig).push_error(-222, "Data out of range"),
                  ("alice", "Keysight33500", "-222", "Data out of range")),
    "awg_garbage": (lambda rig: _awg(rig).faults.set(garbage=1000), ("alice", "Keysight33500", "SYST:ERR?")),
    "awg_silent": (lambda rig: _awg(rig).faults.set(silence=1000), ("alice", "Keysight33500", "no reply")),
}


def _srv(key: str):
    return lambda rig: rig.lab.servers[key]


# Bob's detector controllers and polarization controllers, watched while the link runs
# (link.instrument_watch; the EPC-400 also driven by the tracking loop, once per block):
# disconnect (the twin drops the connection), garbage (a malformed reply), stall (no reply at all).
AUX = {"snspd": ("bob.snspd", "SingleQuantum"), "id120": ("bob.apd", "ID120"),
       "epc400": ("bob.polarization", "EPC"), "mpc320": ("bob.paddles", "MPC320")}
for _short, (_key, _name) in AUX.items():
    for _kind, _fault in (("drop", {"drop": 1}), ("garbage", {"garbage": 1000}),
                          ("stall", {"silence": 1000})):
        INSTRUMENT_FAULTS[f"{_short}_{_kind}"] = (
            (lambda f, k: lambda rig: rig.lab.servers[k].faults.set(**f))(_fault, _key), (_key, _name))


def _watch_bob(rig, nodes, *, track: bool):
    """Open Bob's auxiliary instruments on the rig and watch them (and track with the EPC)."""
    import tomllib

    from calibration.tracking import PolarizationTracking
    from drivers.config import parse_lab
    from link.instrument_watch import InstrumentWatch

    lab = parse_lab(tomllib.loads(rig.lab_toml()), "<rig>")
    drivers = {}
    try:
        for key, _name in AUX.values():
            node, role = key.split(".")
            drv = lab.build(node, role)
            drv.open()
            drivers[key] = drv
    except BaseException:
        for d in drivers.values():
            d.close()
        raise
    bob = nodes["bob"]
    watched = dict(drivers)
    if track:       # the EPC-400 moves the rig's polarization: let the tracking loop drive it
        epc = watched.pop("bob.polarization")
        bob.tracking = PolarizationTracking(epc, frame_s=rig.frame_slots / rig.model.clock_hz,
                                            guard_frames=bob.cfg.max_frames_in_flight)
    watch = InstrumentWatch(bob, watched, period_s=0.5).start()

    def detach():
        watch.close()
        for d in drivers.values():
            try:
                d.close()
            except Exception:  # noqa: BLE001 - a failed instrument may not close cleanly
                pass
    return detach


class _AlarmLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def block_states(db: Path) -> dict[int, str]:
    """block_id -> state, read from a store file as it is (after a crash too)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        return dict(con.execute("SELECT block_id, state FROM block").fetchall())
    except sqlite3.OperationalError:  # killed before the schema was written
        return {}
    finally:
        con.close()


def key_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    con = sqlite3.connect(db, timeout=30)
    try:
        return {k for (k,) in con.execute("SELECT key_id FROM key")}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


def commit_invariant_violations(workdir: Path) -> list[int]:
    """Blocks Bob committed that Alice did not (commit protocol invariant 3): must be empty."""
    a, b = block_states(workdir / "alice.db"), block_states(workdir / "bob.db")
    return sorted(bid for bid, st in b.items() if st in ("committed", "final")
                  and a.get(bid) not in ("committed", "final"))


def instrument_fault_run(fault: str, workdir: Path, *, blocks: int = 6, duration_s: float = 120.0) -> dict:
    """One rig run; ``fault`` hits once the first block's keys are committed on both sides."""
    import link.pipeline as pipeline
    from hil.scenario import Scenario

    inject, words = INSTRUMENT_FAULTS[fault]
    holder: dict = {}
    start_rig = pipeline._rig_front_ends

    def keep_rig(scenario, seed):
        fa, fb, rig = start_rig(scenario, seed)
        holder["rig"] = rig
        return fa, fb, rig

    fired: dict = {}

    def progress(s):
        if not fired and min(s["keys"].values()) > 0 and "rig" in holder:
            fired.update(s["keys"])
            inject(holder["rig"])

    log = _AlarmLog()
    node_log = logging.getLogger("link.node")
    old_level = node_log.level
    node_log.setLevel(logging.WARNING)  # the alarms are warnings, whatever the caller's root level
    node_log.addHandler(log)
    pipeline._rig_front_ends = keep_rig
    try:
        cfg = pipeline.config_for_scenario(Scenario.load(None), block_bits=BLOCK_BITS)
        attach = None
        if fault.split("_")[0] in AUX:
            def attach(nodes):
                return _watch_bob(holder["rig"], nodes, track=fault.startswith("epc400"))
        s = pipeline.run_local(None, blocks=blocks, duration_s=duration_s, workdir=workdir,
                               instruments="rig", config=cfg, progress=progress, attach=attach)
    finally:
        pipeline._rig_front_ends = start_rig
        node_log.removeHandler(log)
        node_log.setLevel(old_level)
    alarms = [m for m in log.messages if " alarm instrument: " in m]
    return {"fault": fault, "fired": bool(fired), "keys_at_fault": fired, "summary": s,
            "instrument_alarms": alarms,
            "alarm_names_it": bool(alarms) and all(w in alarms[0] for w in words),
            "invariant_violations": commit_invariant_violations(workdir)}


# -- kill -9 of the process running both nodes ----------------------------------------------------
def child_main(workdir: str, blocks: int, seed: int, duration_s: float) -> int:
    """The killable process: both nodes on the HIL model, stores in ``workdir``."""
    import link.pipeline as pipeline
    from hil.scenario import Scenario

    keep_psk = pipeline.write_psk

    def write_psk_once(path, *a, **kw):  # a restarted pair keeps its pre-shared secret
        if not Path(path).exists():
            keep_psk(path, *a, **kw)

    pipeline.write_psk = write_psk_once
    cfg = pipeline.config_for_scenario(Scenario.load(None), block_bits=BLOCK_BITS)
    s = pipeline.run_local(None, blocks=blocks, duration_s=duration_s, workdir=workdir, seed=seed,
                           config=cfg)
    print(json.dumps({k: s[k] for k in ("blocks", "blocks_aborted", "keys", "keys_identical", "alarms")}),
          flush=True)
    return 0


def _spawn(workdir: Path, blocks: int, seed: int, duration_s: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # output to files, not pipes: nobody reads a pipe while the child runs, and a full one would block it
    out = open(workdir / "child.out", "w")  # noqa: SIM115 - closed by _reap
    err = open(workdir / "child.err", "w")  # noqa: SIM115
    try:
        return subprocess.Popen([sys.executable, "-m", "bench.faults", "child", "--workdir", str(workdir),
                                 "--blocks", str(blocks), "--seed", str(seed), "--duration", str(duration_s)],
                                cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
    finally:
        out.close()
        err.close()


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _open_block_appears(workdir: Path, keys_before: int) -> bool:
    """Alice holds a block prepared, or committed and not yet final: a commit is under way."""
    states = block_states(workdir / "alice.db")
    return any(st in ("prepared", "committed") for st in states.values()) or \
        len(key_ids(workdir / "alice.db")) > keys_before


def kill_at_random(workdir: Path, rng: random.Random, *, seed: int, max_delay_s: float = 12.0,
                   after_first_key: bool = False, in_commit: bool = False, blocks: int = 3) -> dict:
    """Start the link process on ``workdir``, SIGKILL it at a random moment, report what the crash left.

    ``after_first_key``: wait until Alice's store holds a new key before drawing the delay
    (so the kill lands among commits); ``in_commit``: poll Alice's store and kill the
    moment a commit is under way (a block prepared, or committed and not yet final);
    otherwise the delay counts from the start.
    """
    keys_before = len(key_ids(workdir / "alice.db"))
    p = _spawn(workdir, blocks, seed, 120.0)
    t0 = time.monotonic()
    try:
        if after_first_key or in_commit:
            while p.poll() is None and time.monotonic() - t0 < 90:
                if in_commit and _open_block_appears(workdir, keys_before):
                    break
                if not in_commit and len(key_ids(workdir / "alice.db")) > keys_before:
                    break
                time.sleep(0.002 if in_commit else 0.05)
        delay = 0.0 if in_commit else rng.uniform(0.0, max_delay_s)
        try:
            p.wait(timeout=delay)
            killed = False  # finished before the kill came
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            killed = True
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = _tail(workdir / "child.err")
    at = time.monotonic() - t0
    a_states = block_states(workdir / "alice.db")
    return {"killed": killed, "at_s": round(at, 2), "returncode": p.returncode,
            "stderr_tail": "" if killed or p.returncode == 0 else err[-1500:],
            "alice_keys": key_ids(workdir / "alice.db"), "bob_keys": key_ids(workdir / "bob.db"),
            "alice_open": sorted(b for b, st in a_states.items() if st in ("prepared", "committed")),
            "invariant_violations": commit_invariant_violations(workdir)}


def finish_run(workdir: Path, *, seed: int, blocks: int = 1) -> dict:
    """Run the link process to completion on ``workdir`` (the recovery after the kills)."""
    p = _spawn(workdir, blocks, seed, 120.0)
    try:
        p.wait(timeout=200)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = (workdir / "child.out").read_text()
    last = out.strip().splitlines()[-1] if out.strip() else "{}"
    return {"returncode": p.returncode, "summary": json.loads(last),
            "stderr_tail": _tail(workdir / "child.err"), "alice_keys": key_ids(workdir / "alice.db"),
            "bob_keys": key_ids(workdir / "bob.db")}


def kill_campaign(workdir: Path, kills: int, seed: int, *, report=print) -> dict:
    """``kills`` random kills (some during recovery of the previous one), then a clean run."""
    rng = random.Random(seed)
    committed_ever: set[str] = set()
    rows = []
    for i in range(kills):
        r = kill_at_random(workdir, rng, seed=seed + i, after_first_key=(i % 3 == 0),
                           in_commit=(i % 3 == 1))
        committed_ever |= r["alice_keys"] | r["bob_keys"]
        rows.append(r)
        how = ("after a new key", "in a commit", "from the start")[i % 3]
        report(f"kill {i + 1:3d} ({how:15}): {'SIGKILL' if r['killed'] else 'finished'} "
               f"at {r['at_s']:6.2f} s, "
               f"keys alice {len(r['alice_keys'])} bob {len(r['bob_keys'])}, Alice open blocks "
               f"{r['alice_open']}, invariant violations {r['invariant_violations']}")
    fin = finish_run(workdir, seed=seed + kills)
    lost = committed_ever - (fin["alice_keys"] & fin["bob_keys"])
    identical = fin["alice_keys"] == fin["bob_keys"] and fin["summary"].get("keys_identical") is True
    report(f"recovery run: rc {fin['returncode']}, keys alice {len(fin['alice_keys'])} "
           f"bob {len(fin['bob_keys'])}, identical {identical}, committed keys lost {len(lost)}")
    return {"rows": rows, "final": fin, "lost": lost, "identical": identical,
            "violations": sum(len(r["invariant_violations"]) for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("child", help="(internal) the killable link process")
    c.add_argument("--workdir", required=True)
    c.add_argument("--blocks", type=int, default=3)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--node-kills", type=int, default=12, help="kills of one node in its own process")
    ap.add_argument("--no-instruments", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "child":
        return child_main(args.workdir, args.blocks, args.seed, args.duration)
    logging.basicConfig(level=logging.ERROR)
    ok = True
    if not args.no_instruments:
        print(f"{'fault':16} {'alarm':8} {'names it':9} {'blocks':7} {'keys a/b':12} {'identical':10} "
              f"{'kept':5} {'wall s':7}")
        for fault in INSTRUMENT_FAULTS:
            with tempfile.TemporaryDirectory(prefix="qkd-fault-") as d:
                r = instrument_fault_run(fault, Path(d))
            s = r["summary"]
            kept = r["fired"] and s["keys"]["alice"] >= r["keys_at_fault"].get("alice", 0)
            good = (r["fired"] and "instrument" in s["alarms"] and r["alarm_names_it"]
                    and s["keys_identical"] and kept and not r["invariant_violations"])
            ok &= good
            print(f"{fault:16} {'yes' if 'instrument' in s['alarms'] else 'NO':8} "
                  f"{str(r['alarm_names_it']):9} {s['blocks']:<7} "
                  f"{s['keys']['alice']}/{s['keys']['bob']:<8} {str(s['keys_identical']):10} "
                  f"{str(kept):5} {s['wall_s']:<7.1f}")
            for m in r["instrument_alarms"][:1]:
                print(f"    {m}")
    if args.kills:
        with tempfile.TemporaryDirectory(prefix="qkd-kill-") as d:
            res = kill_campaign(Path(d), args.kills, args.seed)
        ok &= res["identical"] and not res["lost"] and res["violations"] == 0
        print(f"kill -9: {args.kills} kills, {sum(r['killed'] for r in res['rows'])} landed, "
              f"invariant violations {res['violations']}, committed keys lost {len(res['lost'])}, "
              f"final stores identical {res['identical']}")
    if args.node_kills:
        from bench.node_restart import campaign

        with tempfile.TemporaryDirectory(prefix="qkd-node-kill-") as d:
            res = campaign(Path(d), args.node_kills, args.seed)
        ok &= (res["identical"] and not res["lost"] and res["violations"] == 0 and res["clean_exit"]
               and res["delivered_twice"] == 0 and res["resumed"] == res["kills"] == args.node_kills)
        print(f"kill -9 of one node: {res['kills']} kills, resumed {res['resumed']}, invariant violations "
              f"{res['violations']}, committed keys lost {len(res['lost'])}, delivered twice "
              f"{res['delivered_twice']}, final stores identical {res['identical']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
