"""The link engine's subcommands: ``qkd run``, ``qkd psk``, ``qkd alice``/``qkd bob``, ``qkd monitor``.

What it is for: the terminal side of the engine. Library code logs; only this
module prints (progress lines, the summary, JSON). It must not print key
material: summaries carry counts, rates and a yes/no from comparing the stores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .cli import command
from .dashboard import peer_note


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", default=None,
                   help="HIL scenario name or TOML file (default: metro-25km, 25 km)")
    p.add_argument("--duration", type=float, default=90.0, metavar="S",
                   help="wall-clock limit in seconds (default 90)")
    p.add_argument("--blocks", type=int, default=3, help="blocks to distil (default 3)")
    p.add_argument("--block-bits", type=int, default=None, help="Z bits per block (default 2^20)")
    p.add_argument("--seed", type=int, default=1, help="seed of the physical model (default 1)")
    p.add_argument("--workdir", default=None,
                   help="keep the key stores and PSK here (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--instruments", choices=("rig", "model"), default="rig",
                   help="rig (default): the nodes drive the HIL rig's emulated instruments through "
                        "the production drivers; model: the physical model in process (faster, "
                        "no wire protocols)")
    p.add_argument("--reconciliation", default=None, metavar="METHOD",
                   help="reconciliation of every block: cascade (default), cascade-waves, "
                        "cascade-original, ldpc, ldpc-blind or auto (the node file's "
                        "protocol.reconciliation)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write the run here (a new or empty folder): summary.json, telemetry.jsonl, "
                        "the key stores (read back by `qkd report --run DIR`)")
    p.add_argument("--kme", action="store_true",
                   help="start both nodes' ETSI GS QKD 014 KMEs during the run (a lab PKI is made "
                        "in the run's folder: needs --out or --workdir)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics of both nodes on 127.0.0.1:PORT (0: any free port)")


def _fmt_rate(bps: float) -> str:
    for unit, scale in (("Mb/s", 1e6), ("kb/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.2f} {unit}"
    return f"{bps:.0f} b/s"


@command("run", "run Alice and Bob on this machine against the HIL rig and report the key", _run_args)
def _run(args: argparse.Namespace) -> int:
    from hil.model import LinkModel

    from .pipeline import config_for_scenario, run_local

    if args.blocks <= 0:
        print("qkd run: --blocks must be >= 1", file=sys.stderr)
        return 2
    if args.duration <= 0:
        print("qkd run: --duration must be > 0", file=sys.stderr)
        return 2
    try:
        scen = LinkModel(args.scenario, seed=args.seed).scenario
    except (ValueError, OSError) as exc:
        print(f"qkd run: {exc}", file=sys.stderr)
        return 2
    if args.out:
        # one run per folder: the stores, the telemetry log and the pads would carry on from the
        # last run while summary.json is this run's, so `qkd report` would mix the two
        held = sorted(n for n in ("summary.json", "telemetry.jsonl", "alice.db", "bob.db", "link.psk")
                      if (Path(args.out) / n).exists())
        if held:
            print(f"qkd run: --out {args.out} already holds a run ({', '.join(held)}); give a new "
                  f"folder (qkd report reads one run per folder)", file=sys.stderr)
            return 2
    workdir = args.workdir or args.out
    if args.kme and not workdir:
        print("qkd run: --kme needs --out or --workdir (the SAE certificates are written there)",
              file=sys.stderr)
        return 2
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        print("qkd run: --metrics-port must be 0..65535", file=sys.stderr)
        return 2
    over = {}
    if args.block_bits:
        over["block_bits"] = int(args.block_bits)
    if args.reconciliation is not None:
        from postproc_c import methods
        known = [*methods(), "auto"]
        if args.reconciliation not in known:
            print(f"qkd run: --reconciliation: expected one of {', '.join(known)}, "
                  f"got {args.reconciliation!r}", file=sys.stderr)
            return 2
        over["reconciliation"] = args.reconciliation
    for folder in {args.workdir, args.out} - {None}:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:       # a file of that name, no permission
            print(f"qkd run: cannot use {folder} as a folder: {exc.strerror or exc}", file=sys.stderr)
            return 2
    cfg = config_for_scenario(scen, **over)
    # a reused --workdir carries earlier runs' keys: the summary counts this run's own (its blocks')
    held_before = _store_key_counts(workdir) if workdir else {}
    stop = threading.Event()

    def on_sigint(signum, frame):
        stop.set()

    old = signal.signal(signal.SIGINT, on_sigint)

    tty = sys.stdout.isatty()
    last_line = [""]

    def progress(s: dict) -> None:
        if args.json:
            return
        q = f"{s['qber_x']:.4f}" if s.get("qber_x") is not None else "  -   "
        body = (f"blocks {s['blocks']}/{args.blocks} (aborted {s['blocks_aborted']})  QBER_X {q}  "
                f"secret {s['secret_bits']} bits  {'store ' if any(held_before.values()) else ''}keys A/B "
                f"{s['keys']['alice']}/{s['keys']['bob']}  "
                f"alarms {s['alarm_count']}")
        if tty:   # one live line on a terminal
            print(f"\r[{s['wall_s']:6.1f} s] {body}   ", end="", flush=True)
        elif body != last_line[0]:  # a log: one line per change
            last_line[0] = body
            print(f"[{s['wall_s']:6.1f} s] {body}", flush=True)

    try:
        if not args.json:
            print(f"qkd run: scenario {scen.name} ({scen.fiber.length_km:g} km), {args.blocks} blocks of "
                  f"{cfg.block_bits} Z bits, both nodes on this machine, "
                  f"{'emulated instruments' if args.instruments == 'rig' else 'in-process model'} "
                  f"(Ctrl-C ends the run)")
        from .services import run_services
        attach = run_services(workdir, kme=args.kme, metrics_port=args.metrics_port,
                              telemetry_log=args.out is not None,
                              say=None if args.json else (lambda line: print(line, flush=True)))
        s = run_local(args.scenario, blocks=args.blocks, duration_s=args.duration, seed=args.seed,
                      workdir=workdir, config=cfg, progress=progress, stop_event=stop,
                      instruments=args.instruments, attach=attach)
        # keys this run's committed blocks gave (not the stores' totals, which hold earlier runs'
        # keys when --workdir is reused); a temporary workdir is gone by now and held nothing else
        ids = [b["block_id"] for b in s.get("block_results", []) if not b["aborted"]]
        s["keys_this_run"] = _block_key_counts(workdir, ids) if workdir else dict(s["keys"])
        if args.out:
            s["config"] = {"blocks": args.blocks, "seed": args.seed, "instruments": args.instruments,
                           "scenario": args.scenario or scen.name, "block_bits": cfg.block_bits,
                           "eps_sec": cfg.eps_sec, "eps_cor": cfg.eps_cor,
                           "finite_key": cfg.finite_key, "reconciliation": cfg.reconciliation}
            (Path(args.out) / "summary.json").write_text(json.dumps(s, default=float, indent=1))
    finally:
        signal.signal(signal.SIGINT, old)
    if args.json:
        print(json.dumps(s, default=float))
        return 0 if s["keys_identical"] else 1
    print()
    print(f"  blocks              {s['blocks']} ({s['blocks_aborted']} aborted)")
    mine = s["keys_this_run"]["alice"]
    note = (f" (the stores in {workdir} hold {s['keys']['alice']} keys, with earlier runs')"
            if s["keys"]["alice"] != mine else "")
    print(f"  secret key          {s['secret_bits']} bits in {mine} keys{note}")
    print(f"  secret rate         {_fmt_rate(s['secret_rate_bps'])} per emulated second, "
          f"{_fmt_rate(s['secret_rate_wall_bps'])} per wall-clock second")
    qb = "-" if s["qber"] is None else f"{s['qber']:.4f}"
    fv = "-" if s["f"] is None else f"{s['f']:.3f}"
    how = f" ({', '.join(s['reconciliation'])})" if s.get("reconciliation") else ""
    print(f"  QBER                {qb}   reconciliation efficiency f {fv}{how}")
    seen = s["bob_events"] + s["dead_time_vetoed"]
    if seen:
        print(f"  dead-time guard     {s['dead_time_vetoed']} of Bob's {seen} events dropped "
              f"({s['dead_time_vetoed'] / seen:.1%}): a detector was dead")
    if s.get("afterpulse_blocks"):
        print(f"  afterpulses         {s['afterpulse_blocks']} of Bob's blocks aborted: a detector "
              "afterpulses later than the dead-time guard (`qkd calibrate timing` measures it)")
    print(f"  time                {s['emulated_s']:.3f} s emulated, {s['wall_s']:.1f} s wall clock")
    print(f"  alarms              {', '.join(s['alarms']) or 'none'}")
    print(f"  keys identical      {'yes' if s['keys_identical'] else 'NO'} (both stores compared)")
    return 0 if s["keys_identical"] else 1


def _store_key_counts(workdir: str | os.PathLike) -> dict[str, int]:
    """Keys each node's store in ``workdir`` holds now (0 when it has none yet), read-only."""
    import sqlite3
    from contextlib import closing

    from .keystore import key_count

    out = {}
    for role in ("alice", "bob"):
        db = Path(workdir) / f"{role}.db"
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
                out[role] = key_count(con)
        except sqlite3.Error:        # no store yet, or not a key store: nothing held
            out[role] = 0
    return out


def _block_key_counts(workdir: str | os.PathLike, block_ids: list[int]) -> dict[str, int]:
    """Keys the blocks ``block_ids`` were cut into in each node's store in ``workdir`` (committed
    blocks only; block IDs are never reused by a store, so these are one run's keys), read-only."""
    import sqlite3
    from contextlib import closing

    out = {}
    for role in ("alice", "bob"):
        db = Path(workdir) / f"{role}.db"
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
                marks = ",".join("?" * len(block_ids))
                out[role] = int(con.execute(
                    f"SELECT COALESCE(SUM(n_keys), 0) FROM block WHERE state IN ('committed', 'final') "
                    f"AND block_id IN ({marks})", block_ids).fetchone()[0]) if block_ids else 0
        except sqlite3.Error:
            out[role] = 0
    return out


def _psk_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--link-id", required=True, help="name of the link (both nodes use it)")
    p.add_argument("--out", required=True, nargs="+", metavar="FILE",
                   help="file(s) to write: the same secret to each (one per node)")
    p.add_argument("--kib-per-stream", type=int, default=64,
                   help="KiB of secret per authentication stream (8 streams; default 64)")


@command("psk", "generate the pre-shared authentication secret for a pair of nodes", _psk_args)
def _psk(args: argparse.Namespace) -> int:
    import os

    from .auth import STREAMS, write_psk

    per = args.kib_per_stream * 1024
    secret = bytearray(os.urandom(per * len(STREAMS)))
    try:
        for out in args.out:
            write_psk(out, args.link_id, per, secret)
    except (ValueError, OSError) as exc:
        print(f"qkd psk: {exc}", file=sys.stderr)
        return 2
    finally:
        secret[:] = bytes(len(secret))
    print(f"wrote {len(args.out)} copies of a {per * len(STREAMS)}-byte pre-shared secret for link "
          f"{args.link_id!r} (mode 0600): {', '.join(args.out)}; carry them to the nodes by hand")
    return 0


def _monitor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", required=True, nargs="+", metavar="ENDPOINT",
                   help="telemetry PUB endpoint(s) of the node(s), e.g. tcp://127.0.0.1:7110")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages (default: run)")
    p.add_argument("--json", action="store_true", help="print the raw JSON messages")
    p.add_argument("--dashboard", action="store_true",
                   help="live view with sparklines of key rate, QBER and f (redrawn in place on a "
                        "terminal, one frame per refresh in a log)")
    p.add_argument("--refresh", type=float, default=1.0, metavar="S",
                   help="dashboard: seconds between frames (default 1)")
    p.add_argument("--width", type=int, default=40, help="dashboard: samples per sparkline (default 40)")


@command("monitor", "live view of a node's telemetry (rates, QBER, blocks, alarms; --dashboard: "
                    "sparklines)", _monitor_args)
def _monitor(args: argparse.Namespace) -> int:
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt_string(zmq.SUBSCRIBE, "")
    for ep in args.connect:
        try:
            sub.connect(ep)
        except zmq.ZMQError as exc:
            sub.close(0)
            ctx.term()
            print(f"qkd monitor: --connect {ep}: {exc.strerror}: expected a node's telemetry endpoint "
                  "tcp://HOST:PORT (`qkd alice`/`qkd bob` print it at start)", file=sys.stderr)
            return 2
    if not args.json and not args.count:
        print(f"qkd monitor: waiting for telemetry from {', '.join(args.connect)} (Ctrl-C stops)",
              file=sys.stderr, flush=True)
    n = 0
    dash = None
    if args.dashboard:
        from .dashboard import Dashboard
        if args.refresh <= 0 or args.width < 4:
            print("qkd monitor: --refresh must be > 0 and --width >= 4", file=sys.stderr)
            return 2
        dash = Dashboard(args.width)
    tty = sys.stdout.isatty()
    next_frame = time.monotonic() + (args.refresh if dash else 0)

    def draw() -> None:
        frame = dash.render()
        print(("\x1b[H\x1b[J" + frame) if tty else frame + "\n", flush=True)

    try:
        while args.count <= 0 or n < args.count:
            if dash is not None and time.monotonic() >= next_frame:
                next_frame = time.monotonic() + args.refresh
                draw()
            if not sub.poll(min(1000, int(args.refresh * 1000)) if dash else 1000):
                continue
            msg = json.loads(sub.recv_string())
            n += 1
            if dash is not None:
                dash.update(msg)
                continue
            if args.json:
                print(json.dumps(msg), flush=True)
                continue
            stamp = time.strftime("%H:%M:%S", time.localtime(msg.get("t", time.time())))
            kind = msg.get("kind")
            who = msg.get("node", "?")
            if kind == "status":
                print(f"{stamp} {who:5} frames {msg['frames']} detections {msg['detections']} "
                      f"sifted {msg['sifted']} secret {msg['secret_bits']} bits blocks {msg['blocks']} "
                      f"(aborted {msg['blocks_aborted']}) keys {msg['store_keys']} "
                      f"auth pads left {msg['pool_min_left_pads']}{peer_note(msg)}", flush=True)
            elif kind == "block":
                state = f"ABORTED ({msg['reason']})" if msg["aborted"] else f"{msg['secret_bits']} bits"
                print(f"{stamp} {who:5} block {msg['block_id']}: n_Z {msg['n_z']} QBER_X "
                      f"{msg['qber_x']:.4f} leaked {msg['leaked_bits']} -> {state}", flush=True)
            elif kind == "alarm":
                print(f"{stamp} {who:5} ALARM {msg['alarm']}: {msg['reason']}", flush=True)
            else:
                print(f"{stamp} {who:5} {kind}: {json.dumps(msg)}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close(0)
        ctx.term()
    if dash is not None:
        draw()   # the final state
    return 0


def _node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the node file (TOML, see link/config.py)")
    p.add_argument("--blocks", type=int, default=0, help="Alice: stop after this many blocks (default: run)")
    p.add_argument("--json", action="store_true", help="print the final status as one JSON object "
                   "(exit status: 0 stopped as asked, 2 refused to start, 3 stopped itself on an alarm)")


# alarms on which a node stops itself (link.node.Node._guard, _channel_alarm)
_FATAL_ALARMS = ("instrument", "key_store", "rng_health", "internal_error", "selftest_failed")
#: exit status of ``qkd alice``/``qkd bob`` when the node stopped itself on one of them
#: (0: stopped by Ctrl-C, the peer's STOP or ``--blocks``; 2: refused to start)
EXIT_STOPPED_ON_ALARM = 3


def _best_effort(close) -> None:
    """Close one thing on the way out of a refused start: the refusal is the error to report."""
    try:
        close()
    except Exception:  # noqa: BLE001 - best effort on the way out; the message is the error
        pass


def _lock_store(store: Path) -> int | str:
    """Hold ``<store>.lock`` (flock) while this node runs: a second node process on the same key
    store would draw the same one-time pads from its pool (a MAC forgery risk) and race the
    first on every block. Returns the lock's descriptor (closed, and so released, at exit or
    when the process dies), or the reason it cannot be held."""
    import fcntl

    path = store.with_name(store.name + ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        return f"cannot create the key store's lock file {path}: {exc.strerror}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return (f"the key store {store} is in use by another node process (it holds {path}); "
                "stop that node first, or give this node its own [node] store and psk")
    return fd


def _bob_timing(nf, lab) -> tuple:
    """Bob's detector offsets, window and dead time (ns): the node file's, else the lab file's
    ``[bob.timing]`` (what ``qkd calibrate timing --config LAB`` wrote), else zeros for offsets
    and window. The dead time has no default (the dead-time guard needs it, ``link.slotting``).
    Returns (offsets, window_ps, dead_time_ns), or (reason, None, None) when the record does
    not fit this node file or no dead time is known."""
    fs = nf.frontend
    tm = lab.timing or {}
    where = f"{fs.lab}: [bob.timing]"
    if tm and (fs.offsets_ps is None or fs.dead_time_ns is None):
        for key, mine in (("frame_slots", fs.frame_slots), ("nominal_period_ps", 1e12 / fs.clock_hz)):
            if key in tm and abs(float(tm[key]) - mine) > 1e-6 * mine:
                return (f"{where}.{key} = {tm[key]} was calibrated for another set-up than {nf.source}'s "
                        f"[frontend] ({mine:g}); run `qkd calibrate timing --config {fs.lab}` again, or "
                        "give offsets_ps and dead_time_ns in [frontend]"), None, None
    dead = fs.dead_time_ns
    if dead is None:
        dead = tm.get("dead_time_ns")
        if dead is None:
            return (f"{nf.source}: [frontend] dead_time_ns: Bob needs the longest dead time of his "
                    f"detectors (an event is kept only if none was dead); give it there, or measure it "
                    f"with `qkd calibrate timing --config {fs.lab}` (it writes [bob.timing].dead_time_ns "
                    "when the tags show it)"), None, None
        print(f"qkd bob: detector dead time {dead:g} ns from {where}", flush=True)
        ap = tm.get("afterpulse_guard_ns")
        if ap is not None and ap > dead:
            # the detectors' afterpulses reach past their dead time: the guard covers both
            print(f"qkd bob: dead-time guard {ap:g} ns from {where}.afterpulse_guard_ns (the "
                  f"detectors afterpulse beyond their {dead:g} ns dead time)", flush=True)
            dead = ap
    elif (tm.get("afterpulse_guard_ns") or 0) > dead:
        print(f"qkd bob: warning: [frontend] dead_time_ns = {dead:g} is shorter than "
              f"{where}.afterpulse_guard_ns = {tm['afterpulse_guard_ns']:g} (the guard that covers "
              "the afterpulses `qkd calibrate timing` measured); Bob's afterpulse check will stop "
              "the key if they reach past it", flush=True)
    if fs.offsets_ps is not None:
        return fs.offsets_ps, fs.window_ps, float(dead)
    if not tm:
        return (0.0, 0.0, 0.0, 0.0), fs.window_ps, float(dead)
    offs = tm["offsets_ps"]                 # 4 numbers: drivers.config checked the record
    window = fs.window_ps or float(tm.get("window_ps", 0.0) or 0.0)
    print(f"qkd bob: detector offsets and window ({window:g} ps) from {where} "
          f"(calibrated {tm.get('date', 'at an unknown date')})", flush=True)
    return tuple(float(x) for x in offs), window, float(dead)


def _run_node(args: argparse.Namespace, role: str) -> int:
    import zmq

    from drivers.config import ConfigError as LabError
    from drivers.config import load_lab
    from drivers.errors import DriverError
    from drivers.qrng import OsEntropySource

    from .auth import AuthError, AuthPool
    from .channel import Channel
    from .config import ConfigError, load_node_file
    from .frontend import DriverAlice, DriverBob, Timing
    from .keystore import KeyStore
    from .messages import MsgType
    from .node import Node
    from .store_errors import KeyStoreError

    try:
        nf = load_node_file(args.config)
        if nf.role != role:
            raise ConfigError(args.config, "node.role",
                              f'expected "{role}" for `qkd {role}`, got "{nf.role}"')
        lab = load_lab(nf.frontend.lab)
        try:
            instr = lab.build(role, nf.frontend.instrument)
        except LabError as exc:
            raise ConfigError(args.config, "frontend.instrument", str(exc)) from None
    except (ConfigError, LabError) as exc:
        print(f"qkd {role}: {exc}", file=sys.stderr)
        return 2
    cfg = nf.protocol
    # what to close if the node cannot start: each as it opens, closed in reverse (ExitStack)
    setup = contextlib.ExitStack()

    def opened(close) -> None:
        setup.callback(_best_effort, close)

    def refuse(msg: str) -> int:
        print(f"qkd {role}: {msg}", file=sys.stderr)
        setup.close()
        return 2

    lock = _lock_store(nf.store)     # one node process per key store and pad pool
    if isinstance(lock, str):
        return refuse(lock)
    opened(lambda: os.close(lock))
    try:
        pool = AuthPool(nf.psk, nf.store, role)
    except AuthError as exc:
        return refuse(str(exc))
    opened(pool.close)
    if pool.link_id != nf.link_id:
        return refuse(f"{nf.psk} is for link {pool.link_id!r}, not {nf.link_id!r}")
    store = KeyStore(nf.store, nf.link_id, key_size_bits=cfg.key_size_bits,
                     auth_refill_bytes=cfg.auth_refill_bytes)
    opened(store.close)
    ch = Channel(role, pool, retry_s=nf.channel.retry_s)
    opened(ch.close)
    try:
        if role == "alice":
            ch.bind(nf.channel.proto, nf.channel.ctrl)
        else:
            ch.connect(nf.channel.proto, nf.channel.ctrl)
    except zmq.ZMQError as exc:
        how = "listen on" if role == "alice" else "reach"
        return refuse(f"{args.config}: [channel] proto/ctrl: cannot {how} "
                      f"{nf.channel.proto} / {nf.channel.ctrl}: {exc} (another node or program on that "
                      "port? choose free ports in [channel], the same on both nodes)")
    fs = nf.frontend
    opened(instr.close)
    try:
        instr.open()
    except DriverError as exc:
        return refuse(f"cannot open {role}.{fs.instrument} ([frontend] instrument of {args.config}, "
                      f"in {fs.lab}): {exc}")
    if role == "alice":
        fe = DriverAlice(instr, fs.frame_slots, fs.clock_hz)
    else:
        offsets, window, dead_ns = _bob_timing(nf, lab)
        if isinstance(offsets, str):
            return refuse(offsets)
        fe = DriverBob(instr, Timing(1e12 / fs.clock_hz, fs.frame_slots, offsets,
                                     window or 0.8e12 / fs.clock_hz, dead_ns * 1e3))
    try:
        node = Node(role, ch, store, fe, OsEntropySource(), cfg, telemetry=nf.channel.telemetry,
                    block_limit=args.blocks or None, frame_slots=fs.frame_slots)
    except zmq.ZMQError as exc:
        return refuse(f"{args.config}: channel.telemetry: cannot listen on {nf.channel.telemetry}: {exc} "
                      "(another node or program on that port? choose a free port)")
    opened(node.close)
    pol = trk = None
    if nf.calibration.track_polarization:          # [calibration]: issue 7's tracking loop on Bob
        from calibration.tracking import PolarizationTracking

        try:
            pol = lab.build(role, nf.calibration.controller)
            opened(pol.close)
            pol.open()
            node.tracking = trk = PolarizationTracking(
                pol, drift_rad_per_sqrt_s=nf.calibration.drift_rad_per_sqrt_s,
                frame_s=fs.frame_slots / fs.clock_hz, guard_frames=cfg.max_frames_in_flight)
            opened(trk.close)
            print(f"qkd {role}: polarization tracking with {trk.dev.name} ({trk.dev.n} actuators, "
                  f"{trk.dev.lo:g}..{trk.dev.hi:g} {trk.dev.unit})", flush=True)
        except Exception as exc:  # noqa: BLE001 - any driver/config failure: refuse to start
            return refuse(f"polarization tracking: {exc}")
    watched: dict = {}
    for name in nf.watch.instruments:              # [watch]: read back while the link runs (issue 9)
        try:
            drv = lab.build(role, name)
            opened(drv.close)
            drv.open()
            watched[f"{role}.{name}"] = drv
        except Exception as exc:  # noqa: BLE001 - any driver/config failure: refuse to start
            return refuse(f"watch.instruments: {name}: {exc}")
    setup.pop_all()                # started: the run's own shutdown below closes everything
    stop = threading.Event()
    # Ctrl-C, and SIGTERM (kill, `systemctl stop`), stop the node the same clean way: without a
    # handler SIGTERM ended the process at once, the stores' -wal files and the lock left behind
    old = signal.signal(signal.SIGINT, lambda *a: stop.set())
    old_term = signal.signal(signal.SIGTERM, lambda *a: stop.set())
    node.start()
    print(f"qkd {role}: link {nf.link_id}, telemetry on {node.telemetry_endpoint}", flush=True)
    from .services import close_all, start_kme, start_metrics
    closers: list = []
    if watched:
        from .instrument_watch import InstrumentWatch

        closers.append(InstrumentWatch(node, watched, period_s=nf.watch.period_s).start().close)
    last = 0.0
    try:
        try:
            if nf.metrics is not None:
                ex = start_metrics([node], nf.metrics)
                closers.append(ex.stop)
                print(f"qkd {role}: metrics on http://{nf.metrics.addr}:{ex.port}/metrics", flush=True)
            if nf.kme is not None:
                kh = start_kme(nf.kme, store, role, node=node)
                closers.append(kh.close)
                print(f"qkd {role}: KME {nf.kme.kme_id} at {kh.url} (SAEs {', '.join(sorted(nf.kme.saes))}, "
                      f"reservations over the link with {nf.kme.peer_kme_id})", flush=True)
        except (OSError, ValueError, KeyStoreError) as exc:  # port in use, certificates, stores
            print(f"qkd {role}: cannot start the node's services: {exc}", file=sys.stderr)
            return 2
        while not stop.is_set() and not node.stopped:
            if role == "alice" and args.blocks and node.blocks_done >= args.blocks and node.idle():
                ch.send(MsgType.STOP, 0, lane="ctrl")
                ch.wait_acked(5)
                break
            if not args.json and time.monotonic() - last > 2:
                last = time.monotonic()
                st = node.status()
                print(f"[{st['wall_s']:6.1f} s] frames {st['frames']} blocks {st['blocks']} "
                      f"(aborted {st['blocks_aborted']}) secret {st['secret_bits']} bits "
                      f"keys {st['store_keys']}{peer_note(st)}", flush=True)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
        # the node stopped itself (not Ctrl-C, not the peer's STOP): say why at the end
        fatal = [a for a in node.alarms if a["alarm"] in _FATAL_ALARMS] \
            if node.stopped and not stop.is_set() else []
        st = node.status()
        st["alarms"] = sorted({a["alarm"] for a in node.alarms})
        if trk is not None:                     # [calibration] track_polarization (issue 7)
            trk.close()
            st["polarization_tracking"] = {**trk.summary(), "on": node.tracking is not None}
            if not args.json:
                print(f"qkd {role}: polarization tracking: {json.dumps(st['polarization_tracking'])}",
                      flush=True)
        close_all(closers)
        node.close()
        ch.close()
        for inst in (fe, pol, *watched.values()):
            try:
                if inst is not None:
                    inst.close()
            except Exception:  # noqa: BLE001 - closing an instrument at exit is best effort
                pass
        pool.close()
        store.close()
        os.close(lock)
    if fatal:
        print(f"qkd {role}: stopped by itself on alarm {fatal[-1]['alarm']}: {fatal[-1]['reason']}",
              file=sys.stderr, flush=True)
    elif not args.json:   # a clean stop says so (the log otherwise just ended at a status line)
        print(f"qkd {role}: stopped, {st['store_keys']} keys in {nf.store}", flush=True)
    if args.json:
        print(json.dumps(st, default=float))
    # 3: the node stopped itself on an alarm (instrument, key store, RNG health, ...), committed
    # keys kept: not a success, so a supervisor (systemd Restart=on-failure) can act on it
    return EXIT_STOPPED_ON_ALARM if fatal else 0


@command("alice", "run Alice's node from a node file (real or emulated instruments)", _node_args)
def _alice(args: argparse.Namespace) -> int:
    return _run_node(args, "alice")


@command("bob", "run Bob's node from a node file (real or emulated instruments)", _node_args)
def _bob(args: argparse.Namespace) -> int:
    return _run_node(args, "bob")
