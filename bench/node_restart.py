"""kill -9 of ONE node running in its own process, then a restart of that node alone (issue 9).

    python -m bench.node_restart --kills 12 --seed 5      # the campaign (also: python -m bench.faults)

Alice and Bob run as two processes (``node`` sub-command, as ``qkd alice`` and
``qkd bob`` run on two machines): each its own key store, authentication pool
and channel end, joined by a real ZeroMQ channel and an emulated fiber
(``link.fiber``: Alice's patterns to Bob's process, where the HIL model turns
them into detections). The campaign keeps the link running and, many times,
SIGKILLs one node (chosen at random) either at a random moment or the moment a
two-step commit is open in its store, leaves it down a random while, and
restarts it alone while its peer keeps running. After each kill it checks:

* the commit invariant (every block Bob committed, Alice committed), reading
  Bob's store before Alice's;
* the link resumes: a new block's keys reach both stores (time measured), or
  a node stops with an alarm (reported; counted as a failure unless the alarm
  is a clear one);

and at the end (Alice told to stop, both processes exit): both stores hold
the same key IDs with the same values, every key either store held at any
snapshot is still there (nothing committed lost), and no key value appears
under two IDs (no key delivered twice).

What it must not do: leave processes behind (each child is killed and reaped
in ``finally``) or print key material (key values are compared by digest).
"""

from __future__ import annotations

import argparse
import hashlib
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

from link.keystore import KeyStoreError, key_rows

ROOT = Path(__file__).resolve().parent.parent
LINK_ID = "hil-node-restart"
BLOCK_BITS = 1 << 19       # both front ends: smaller blocks give no key at 25 km (finite-key)


# -- one node, in its own process ----------------------------------------------------------------
def _rig_front_end(role: str, d: Path):
    """The production front end on the rig's emulated instrument named in ``rig.json`` (written by
    the campaign, which runs the rig: the lab's instruments outlive a node's restart)."""
    from drivers.keysight_awg import Keysight33500
    from drivers.picoquant import PicoQuantStreamTagger
    from hil.rig import RIG_ENCODING
    from link.frontend import DriverAlice, DriverBob, Timing

    info = json.loads((d / "rig.json").read_text())
    if role == "alice":
        awg = Keysight33500(info["resources"]["alice.pattern_generator"], encoding=RIG_ENCODING)
        awg.open()
        return DriverAlice(awg, info["frame_slots"], info["clock_hz"])
    t = info["timing"]
    tagger = PicoQuantStreamTagger(info["resources"]["bob.time_tagger"])
    tagger.open()
    return DriverBob(tagger, Timing(t["period_ps"], t["frame_slots"], tuple(t["offsets_ps"]), t["window_ps"],
                                    t["dead_time_ps"]))


def node_main(role: str, workdir: str, seed: int, frontend: str = "fiber") -> int:
    import zmq

    from drivers.qrng import OsEntropySource
    from hil.model import LinkModel
    from link.auth import AuthPool
    from link.channel import Channel
    from link.fiber import FiberAlice, FiberBob
    from link.keystore import KeyStore
    from link.messages import MsgType
    from link.node import Node
    from link.pipeline import config_for_scenario

    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {role} %(name)s %(message)s")
    d = Path(workdir)
    model = LinkModel(None, seed=seed)
    frame_slots = model.frame_slots
    if frontend == "rig":
        frame_slots = json.loads((d / "rig.json").read_text())["frame_slots"]
    cfg = config_for_scenario(model.scenario, block_bits=BLOCK_BITS)
    zctx = zmq.Context()
    store = KeyStore(d / f"{role}.db", LINK_ID, key_size_bits=cfg.key_size_bits,
                     auth_refill_bytes=cfg.auth_refill_bytes)
    pool = AuthPool(d / "link.psk", d / f"{role}.db", role)
    ch = Channel(role, pool, ctx=zctx, retry_s=0.2)
    fe = node = None
    out: dict = {"role": role, "clean_stop": False}
    try:
        if role == "alice":
            ch.bind(f"ipc://{d}/proto.sock", f"ipc://{d}/ctrl.sock")
        else:
            ch.connect(f"ipc://{d}/proto.sock", f"ipc://{d}/ctrl.sock")
        if frontend == "rig":
            fe = _rig_front_end(role, d)
        elif role == "alice":
            fe = FiberAlice(f"ipc://{d}/fiber.sock", model.frame_slots, model.clock_hz, ctx=zctx)
        else:
            fe = FiberBob(f"ipc://{d}/fiber.sock", model, ctx=zctx)
        node = Node(role, ch, store, fe, OsEntropySource(), cfg, ctx=zctx, telemetry=None,
                    frame_slots=frame_slots)
        if os.environ.get("QKD_BENCH_NO_RESUME"):   # the control experiment: no frame re-synchronisation
            node.resume = None
        node.start()
        stop_seen = None
        while not node.stopped:
            if (d / f"{role}.diskfull").exists() and "disk_full_at" not in out:
                out["disk_full_at"] = _fill_disk()
            if role == "alice" and (d / "stop").exists():
                if stop_seen is None:
                    stop_seen = time.monotonic()
                    node.block_limit = 0           # no new frames or blocks; the open ones finish
                if node.idle() and time.monotonic() - stop_seen > 0.5:
                    try:
                        ch.send(MsgType.STOP, 0, lane="ctrl")
                        ch.wait_acked(5.0)
                    except Exception:  # noqa: BLE001 - Bob may be gone; the parent checks the stores
                        pass
                    out["clean_stop"] = True
                    break
                if time.monotonic() - stop_seen > 120:
                    break
            time.sleep(0.05)
        if role == "bob" and not node.alarms:
            out["clean_stop"] = True                  # stopped by Alice's STOP
        node.stop()
        out.update(alarms=[f"{a['alarm']}: {a['reason']}" for a in node.alarms],
                   blocks=node.blocks_done, aborted=node.counters["blocks_aborted"],
                   keys=store.count(), channel={k: v for k, v in ch.counters.items() if v},
                   resume=None if node.resume is None else
                   {"first": node.resume.first, "dropped": node.resume.dropped,
                    "resets": node.resume.resets},
                   epochs=getattr(fe, "epochs", None), dropped_frames=getattr(fe, "dropped_frames", None))
        print(json.dumps(out), flush=True)
        return 0
    finally:
        if node is not None:
            node.close()
        if fe is not None:
            fe.close()
        ch.close()
        pool.close()
        store.close()
        zctx.destroy(linger=0)


def _fill_disk() -> int:
    """From now on this process cannot write past 64 KiB into any file: a full disk, as the kernel
    reports it (EFBIG, SIGXFSZ ignored), for the store's SQLite files (the key store and the
    authentication pool's state share them). Returns the limit."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = 64 << 10
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return limit


# -- reading the stores as a crash left them --------------------------------------------------------
def _query(db: Path, sql: str) -> list:
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:       # killed before the schema was written
        return []
    finally:
        con.close()


def _key_rows(db: Path) -> list:
    """(key_id, block_id, idx, data) of every key in the store (``link.keystore.key_rows``)."""
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        return list(key_rows(con))
    except (sqlite3.OperationalError, KeyStoreError):      # killed before the schema was written
        return []
    finally:
        con.close()


def key_ids(db: Path) -> set[str]:
    return {r[0] for r in _key_rows(db)}


def open_blocks(db: Path, role: str = "alice") -> dict[int, str]:
    """Blocks with a commit under way: Alice's prepared or committed-not-final, Bob's prepared
    (committed is Bob's last state)."""
    states = "('prepared', 'committed')" if role == "alice" else "('prepared')"
    return dict(_query(db, f"SELECT block_id, state FROM block WHERE state IN {states}"))


def known_blocks(db: Path) -> set[int]:
    """Every block the store has a record of, in any state."""
    return {b for (b,) in _query(db, "SELECT block_id FROM block")}


def new_key_in_both(da: Path, db: Path, after_block: int) -> bool:
    """A key from a block numbered above ``after_block`` is in both stores: the link made new key
    (finishing a commit that was under way at a kill does not count)."""
    return bool({r[0] for r in _key_rows(da) if r[1] > after_block}
                & {r[0] for r in _key_rows(db) if r[1] > after_block})


def committed_blocks(db: Path) -> set[int]:
    return {b for (b,) in _query(db, "SELECT block_id FROM block WHERE state IN ('committed', 'final')")}


def key_digests(db: Path) -> dict[str, str]:
    """key ID -> SHA-256 of its value (only digests leave this function)."""
    return {r[0]: hashlib.sha256(r[3]).hexdigest() for r in _key_rows(db)}


# -- the campaign -----------------------------------------------------------------------------------
class _Pair:
    def __init__(self, d: Path, seed: int, resume: bool = True, frontend: str = "fiber") -> None:
        self.d, self.seed, self.resume, self.frontend = d, seed, resume, frontend
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts = {"alice": 0, "bob": 0}

    def start_both_until_first_key(self, timeout_s: float = 240) -> None:
        """Start Alice and Bob and wait until one key is in both stores (or a node died)."""
        da, db = self.d / "alice.db", self.d / "bob.db"
        self.start("alice")
        self.start("bob")
        if not _wait(lambda: key_ids(db) & key_ids(da) or not (self.alive("alice") and self.alive("bob")),
                     timeout_s):
            raise RuntimeError(f"no first key within {timeout_s:g} s")

    def start(self, role: str) -> None:
        self.starts[role] += 1
        n = self.starts[role]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if not self.resume:
            env["QKD_BENCH_NO_RESUME"] = "1"
        out = open(self.d / f"{role}-{n}.out", "w")  # noqa: SIM115 - closed below (the child has it)
        err = open(self.d / f"{role}-{n}.err", "w")  # noqa: SIM115
        try:
            self.procs[role] = subprocess.Popen(
                [sys.executable, "-m", "bench.node_restart", "node", "--role", role, "--workdir", str(self.d),
                 "--seed", str(self.seed * 100 + n), "--frontend", self.frontend],
                cwd=ROOT, env=env, stdout=out, stderr=err)
        finally:
            out.close()
            err.close()

    def kill(self, role: str) -> None:
        p = self.procs[role]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)

    def alive(self, role: str) -> bool:
        return self.procs[role].poll() is None

    def summary(self, role: str) -> dict:
        try:
            lines = (self.d / f"{role}-{self.starts[role]}.out").read_text().strip().splitlines()
            return json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            return {}

    def err_tail(self, role: str, n: int = 1200) -> str:
        try:
            return (self.d / f"{role}-{self.starts[role]}.err").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _wait(cond, timeout_s: float, step_s: float = 0.05) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step_s)
    return False


def campaign(workdir: Path, kills: int, seed: int, *, report=print, recover_timeout_s: float = 150.0,
             max_delay_s: float = 8.0, max_down_s: float = 3.0, min_down_s: float = 0.0,
             resume: bool = True, frontend: str = "fiber") -> dict:
    """Run the pair on ``workdir``; ``kills`` times SIGKILL one node and restart it alone.
    ``resume=False`` is the control: Alice's node without ``link.resume`` (frames from 0 at
    every start, no floor), to show what the re-synchronisation prevents. ``frontend="rig"``: the
    nodes drive the HIL rig's emulated AWG and time tagger through the production drivers
    (``DriverAlice``/``DriverBob``, frame epochs of ``link.frame_epoch``); the rig runs in this
    process, like a lab's instruments it outlives every node restart."""
    from link.auth import write_psk

    rng = random.Random(seed)
    d = Path(workdir)
    da, db = d / "alice.db", d / "bob.db"
    write_psk(d / "link.psk", LINK_ID, 1 << 16)
    if frontend not in ("fiber", "rig"):
        raise ValueError(f"frontend: expected 'fiber' or 'rig', got {frontend!r}")
    rig = None
    if frontend == "rig":
        from hil.rig import Rig
        from link.frontend import Timing

        rig = Rig(None, seed).start()
        t = Timing.for_model(rig.model)
        (d / "rig.json").write_text(json.dumps({
            "resources": rig.resources(), "frame_slots": rig.frame_slots, "clock_hz": rig.model.clock_hz,
            "timing": {"period_ps": t.period_ps, "frame_slots": t.frame_slots,
                       "offsets_ps": list(t.offsets_ps), "window_ps": t.window_ps,
                       "dead_time_ps": t.dead_time_ps}}))
    pair = _Pair(d, seed, resume, frontend)
    rows: list[dict] = []
    committed_ever: set[str] = set()
    t_start = time.monotonic()
    try:
        pair.start_both_until_first_key()
        for i in range(kills):
            victim = ("alice", "bob")[i % 2] if i < 2 else rng.choice(("alice", "bob"))
            mode = "in_commit" if rng.random() < 0.5 else "random"
            if not (pair.alive("alice") and pair.alive("bob")):
                break
            vdb = d / f"{victim}.db"
            t0 = time.monotonic()
            if mode == "in_commit":
                hit = _wait(lambda v=victim, p=vdb: bool(open_blocks(p, v)) or not pair.alive(v), 90, 0.002)
                if not hit:
                    mode = "random (no commit seen)"
            else:
                time.sleep(rng.uniform(0.0, max_delay_s))
            open_at_kill = open_blocks(vdb, victim)
            pair.kill(victim)
            at = time.monotonic() - t0
            # Bob first: a block Bob committed must already be committed on Alice's side
            bob_c, alice_c = committed_blocks(db), committed_blocks(da)
            violations = sorted(bob_c - alice_c)
            snap = key_ids(db) | key_ids(da)
            committed_ever |= snap
            # resumed = new key: from a block neither store knew of at the kill (a commit that was
            # under way completes on restart without the restarted node making any key)
            last_block = max(known_blocks(da) | known_blocks(db), default=-1)
            down = rng.uniform(min_down_s, max(min_down_s, max_down_s))
            time.sleep(down)
            pair.start(victim)
            t1 = time.monotonic()
            resumed = _wait(lambda b=last_block: new_key_in_both(da, db, b)
                            or not (pair.alive("alice") and pair.alive("bob")), recover_timeout_s, 0.2)
            both_alive = pair.alive("alice") and pair.alive("bob")
            resumed = resumed and both_alive
            row = {"i": i + 1, "victim": victim, "mode": mode, "at_s": round(at, 2),
                   "open_at_kill": open_at_kill, "down_s": round(down, 2),
                   "resumed_s": round(time.monotonic() - t1, 1) if resumed else None,
                   "violations": violations, "keys_at_kill": len(snap)}
            if not both_alive:
                row["stopped"] = {r: {"alive": pair.alive(r), "summary": pair.summary(r),
                                      "err": pair.err_tail(r, 600)} for r in ("alice", "bob")}
            rows.append(row)
            report(f"kill {i + 1:3d}: {victim:5} {mode:9} at {at:5.2f} s, open blocks {open_at_kill}, "
                   f"down {down:4.2f} s, keys so far {len(snap)}, violations {violations}, "
                   + (f"link resumed in {row['resumed_s']} s" if resumed else "LINK DID NOT RESUME"))
            if not resumed:
                break
        # the end: Alice stops taking frames, finishes her blocks and sends STOP
        (d / "stop").touch()
        clean = _wait(lambda: not pair.alive("alice") and not pair.alive("bob"), 180, 0.2)
        final = {r: pair.summary(r) for r in ("alice", "bob")}
    finally:
        pair.close()
        if rig is not None:
            rig_stats = {"frames": rig.stats.frames, "unread_tags": rig.stats.unread_tags}
            rig.stop()
    da_d, db_d = key_digests(da), key_digests(db)
    identical = da_d == db_d
    final_keys = set(da_d) & set(db_d)
    lost = committed_ever - final_keys
    values = list(da_d.values())
    twice = len(values) - len(set(values))
    res = {"rows": rows, "kills": len(rows), "clean_exit": clean, "final": final,
           "identical": identical, "keys": {"alice": len(da_d), "bob": len(db_d)}, "lost": sorted(lost),
           "delivered_twice": twice, "violations": sum(len(r["violations"]) for r in rows),
           "resumed": sum(r["resumed_s"] is not None for r in rows),
           "open_left": {r: open_blocks(d / f"{r}.db", r) for r in ("alice", "bob")},
           "wall_s": round(time.monotonic() - t_start, 1), "frontend": frontend,
           "rig": rig_stats if rig is not None else None}
    report(f"end: clean exit {clean}, keys alice {len(da_d)} bob {len(db_d)}, identical {identical}, "
           f"committed keys lost {len(lost)}, key values under two IDs {twice}, "
           f"open blocks left {res['open_left']}, alarms alice {final['alice'].get('alarms')} "
           f"bob {final['bob'].get('alarms')}")
    return res


def disk_full_run(workdir: Path, victim: str = "bob", *, report=print) -> dict:
    """The link runs; ``victim``'s disk fills up under its store (the authentication pool writes
    its state on every message, so it is usually the first to hit it); the victim must stop with
    the ``key_store`` alarm naming its store file. Then it restarts with room again: the link
    resumes and both stores end identical with every key committed before."""
    from link.auth import write_psk

    d = Path(workdir)
    da, db = d / "alice.db", d / "bob.db"
    write_psk(d / "link.psk", LINK_ID, 1 << 16)
    pair = _Pair(d, 1)
    try:
        pair.start_both_until_first_key()
        (d / f"{victim}.diskfull").touch()
        t0 = time.monotonic()
        stopped = _wait(lambda: not pair.alive(victim), 120, 0.1)
        stop_s = time.monotonic() - t0
        summary = pair.summary(victim)
        snap = key_ids(db) | key_ids(da)
        last_block = max(known_blocks(da) | known_blocks(db), default=-1)
        peer = "alice" if victim == "bob" else "bob"
        peer_alive = pair.alive(peer)
        report(f"disk full on {victim}: stopped {stopped} after {stop_s:.1f} s, exit code "
               f"{pair.procs[victim].returncode}, alarms {summary.get('alarms')}; peer still running "
               f"{peer_alive}")
        if not stopped:
            pair.kill(victim)
        (d / f"{victim}.diskfull").unlink()
        pair.start(victim)
        resumed = _wait(lambda: new_key_in_both(da, db, last_block)
                        or not (pair.alive("alice") and pair.alive("bob")), 150, 0.2)
        resumed = resumed and pair.alive("alice") and pair.alive("bob")
        (d / "stop").touch()
        clean = _wait(lambda: not pair.alive("alice") and not pair.alive("bob"), 180, 0.2)
    finally:
        pair.close()
    da_d, db_d = key_digests(da), key_digests(db)
    res = {"stopped": stopped, "stop_s": stop_s, "alarms": summary.get("alarms", []),
           "returncode": pair.procs[victim].returncode if stopped else None, "peer_alive": peer_alive,
           "resumed": resumed, "clean_exit": clean, "identical": da_d == db_d,
           "keys": {"alice": len(da_d), "bob": len(db_d)}, "lost": sorted(snap - (set(da_d) & set(db_d)))}
    report(f"after restart with room: resumed {resumed}, keys alice {len(da_d)} bob {len(db_d)}, "
           f"identical {res['identical']}, committed keys lost {len(res['lost'])}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.node_restart", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    n = sub.add_parser("node", help="(internal) one node process")
    n.add_argument("--role", choices=("alice", "bob"), required=True)
    n.add_argument("--workdir", required=True)
    n.add_argument("--seed", type=int, default=1)
    n.add_argument("--frontend", choices=("fiber", "rig"), default="fiber")
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--no-resume", action="store_true", help="control run without link.resume")
    ap.add_argument("--max-down", type=float, default=3.0, help="longest time a killed node stays down (s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frontend", choices=("fiber", "rig"), default="fiber",
                    help="fiber: link.fiber front ends; rig: production AWG/tagger drivers on the HIL rig")
    args = ap.parse_args(argv)
    if args.cmd == "node":
        return node_main(args.role, args.workdir, args.seed, args.frontend)
    with tempfile.TemporaryDirectory(prefix="qkd-node-kill-") as tmp:
        res = campaign(Path(tmp), args.kills, args.seed, resume=not args.no_resume, max_down_s=args.max_down,
                       frontend=args.frontend)
    n_alice = sum(r["victim"] == "alice" for r in res["rows"])
    print(f"kill -9 of one node ({args.frontend} front ends): {res['kills']} kills ({n_alice} "
          f"alice, {sum(r['victim'] == 'bob' for r in res['rows'])} bob; "
          f"{sum(r['mode'] == 'in_commit' for r in res['rows'])} in a commit), resumed {res['resumed']}, "
          f"invariant violations {res['violations']}, committed keys lost {len(res['lost'])}, "
          f"delivered twice {res['delivered_twice']}, stores identical {res['identical']}, "
          f"wall {res['wall_s']} s")
    ok = (res["identical"] and not res["lost"] and res["violations"] == 0 and res["delivered_twice"] == 0
          and res["resumed"] == res["kills"] == args.kills and res["clean_exit"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
