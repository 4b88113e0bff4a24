"""Soak run: the link as a lab engineer runs it for hours, watched from outside for growth.

    nice -n 5 python -m bench.soak --minutes 15 --every 30 --out /tmp/soak   # writes soak.jsonl

What it is for: find what grows without bound when ``qkd alice`` and ``qkd bob`` run for a
long time. It starts the README's lab set-up as separate processes, each through the
installed ``qkd`` command: ``qkd devices emulate`` (the HIL rig), ``qkd psk``, ``qkd alice``
and ``qkd bob`` from node files written for the rig (Alice with a ``[metrics]`` table), and
``qkd monitor --dashboard`` on both telemetry endpoints. Every ``--every`` seconds it
samples, from /proc and the file system only (no code of the link runs in this process):
per process RSS, open file descriptors, threads and TCP sockets; the size of each key
store, its -wal and the logs; the secret bits and blocks from the nodes' status lines;
the size of Alice's metrics page; per authentication stream of each node's pool, the pads
left and the bytes of its stored segments (read from the store file, counts only). The last
lines print each quantity's growth per hour
over the second half of the run (the first half includes start-up and warm-up), the
figure to compare before and after a fix.

The rig's emulated instruments keep the latest 1000 requests they received
(``hil.emulated.server.REQUEST_HISTORY``, for tests that look at the wire); before that was
bounded, AWG waveform uploads (about 1 MB a frame) grew the rig process by ~37 MB/s, which
this soak found. ``--code DIR`` runs another checkout's code (put
first on ``PYTHONPATH`` of every child) for before/after comparisons with one installed venv.

To see what a node's RSS growth is made of, set ``QKD_MEMTRACE=DIR`` (``link.memtrace``) in
the environment of this command: the nodes then write tracemalloc growth by call site and
SQLite's allocation every ``QKD_MEMTRACE_EVERY`` seconds (and run slower).

What it must not do: leave processes behind (each is stopped with SIGINT, then killed, in
``finally``), or read key material (only sizes and counts). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

from link.config import RIG_PROTOCOL_KEYS, render_node_file

STATUS = re.compile(r"\[\s*([\d.]+) s\] frames (\d+) blocks (\d+) \(aborted (\d+)\) "
                    r"secret (\d+) bits keys (\d+)")


FILES = ("alice.db", "alice.db-wal", "bob.db", "bob.db-wal")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_sample(pid: int) -> dict:
    """RSS (kB), open descriptors, threads and TCP sockets of process ``pid`` (from /proc)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
        fds = os.listdir(f"/proc/{pid}/fd")
        out["fds"] = len(fds)
        inodes = set()
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        tcp = 0
        for table in ("tcp", "tcp6"):
            p = Path(f"/proc/{pid}/net/{table}")
            if p.exists():
                for row in p.read_text().splitlines()[1:]:
                    if row.split()[9] in inodes:
                        tcp += 1
        out["tcp_sockets"] = tcp
        out["sockets"] = len(inodes)
    except (OSError, ValueError, IndexError):
        pass
    return out


def _last_status(log: Path) -> dict:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    found = STATUS.findall(text)
    if not found:
        return {}
    wall, frames, blocks, aborted, secret, keys = found[-1]
    return {"wall_s": float(wall), "frames": int(frames), "blocks": int(blocks),
            "aborted": int(aborted), "secret_bits": int(secret), "keys": int(keys)}


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def pad_sample(db: Path, psk: Path) -> dict:
    """Per auth stream: pads left (capacity minus durably used or erased) and the bytes of its
    stored segments, read from the node's store (counts and sizes only, never pad bytes)."""
    try:
        per = int(psk.read_bytes()[:64].split(b"\n")[2])     # the header: magic, link id, size
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            seg = dict(c.execute("SELECT stream, SUM(LENGTH(data)) FROM auth_segment GROUP BY stream"))
            state = c.execute("SELECT stream, send_reserved, recv_last, erased_pads, dropped_bytes "
                              "FROM auth_state").fetchall()
        c.close()
    except (OSError, ValueError, IndexError, sqlite3.Error):
        return {}
    role = db.stem
    out = {}
    for s, res, last, erased, dbytes in state:
        cap = (per + dbytes + (seg.get(s) or 0) - 8) // 8
        used = max(erased, res if s.startswith(role + ".") else last + 1)
        out[s] = {"left_pads": cap - used, "stored_bytes": seg.get(s) or 0}
    return out


def _rig_values(rig: str) -> dict:
    """[protocol]/[frontend] values from the comment header ``qkd devices emulate`` writes."""
    head = "\n".join(line for line in rig.splitlines() if line.startswith("#"))

    def grab(key):
        m = re.search(rf"\b{key} = (\[[^\]]*\]|\"[^\"]*\"|[\d.e+-]+)", head)
        if m is None:
            raise RuntimeError(f"the rig's lab file has no {key} in its header")
        return m.group(1)

    return {k: tomllib.loads(f"v = {grab(k)}")["v"]
            for k in (*RIG_PROTOCOL_KEYS, "frame_slots", "clock_hz", "offsets_ps", "window_ps",
                      "dead_time_ns")}


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    for name in ("monitor", "alice", "bob", "rig"):
        p = procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def growth_per_hour(rows: list[dict], get) -> float | None:
    """Least-squares slope of ``get(row)`` against time over the second half of ``rows``, per hour."""
    pts = [(r["t_s"], get(r)) for r in rows[len(rows) // 2:]]
    pts = [(t, v) for t, v in pts if v is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    return None if den == 0 else 3600 * sum((t - mt) * (v - mv) for t, v in pts) / den


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    ap.add_argument("--scenario", default="metro-25km")
    ap.add_argument("--out", default=None, help="folder for the run (default: a temporary one, kept)")
    ap.add_argument("--qkd", default=shutil.which("qkd") or str(Path(sys.executable).with_name("qkd")))
    ap.add_argument("--code", default=None, metavar="DIR",
                    help="run the checkout in DIR (first on the children's PYTHONPATH)")
    a = ap.parse_args(argv)
    env = dict(os.environ)
    if a.code:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(a.code).resolve()), env.get("PYTHONPATH", "")])
    d = Path(a.out or tempfile.mkdtemp(prefix="qkd-soak-"))
    d.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    logs = {n: d / f"{n}.log" for n in ("rig", "alice", "bob", "monitor")}
    rows: list[dict] = []
    try:
        with open(d / "rig.toml", "w") as rig_out, open(logs["rig"], "w") as err:
            cmd = [a.qkd, "devices", "emulate", "--scenario", a.scenario]
            procs["rig"] = subprocess.Popen(cmd, stdout=rig_out, stderr=err, cwd=d, env=env)
        end = time.monotonic() + 60
        while "[bob.time_tagger]" not in (d / "rig.toml").read_text():
            if time.monotonic() > end or procs["rig"].poll() is not None:
                raise RuntimeError(f"the rig did not start: {logs['rig'].read_text()[-2000:]}")
            time.sleep(0.5)
        vals = _rig_values((d / "rig.toml").read_text())
        subprocess.run([a.qkd, "psk", "--link-id", "soak-link", "--out", "alice.psk", "bob.psk"],
                       cwd=d, check=True, stdout=subprocess.DEVNULL, env=env)
        ports = {"proto": _free_port(), "ctrl": _free_port()}
        tel = {"alice": _free_port(), "bob": _free_port()}
        mport = _free_port()
        for role, inst in (("alice", "pattern_generator"), ("bob", "time_tagger")):
            fe = {"lab": "rig.toml", "instrument": inst, "frame_slots": vals["frame_slots"],
                  "clock_hz": vals["clock_hz"]}
            if role == "bob":
                fe.update(offsets_ps=vals["offsets_ps"], window_ps=vals["window_ps"],
                          dead_time_ns=vals["dead_time_ns"])
            tables = {"node": {"role": role, "link_id": "soak-link", "psk": f"{role}.psk",
                               "store": f"{role}.db"},
                      "channel": {"proto": f"tcp://127.0.0.1:{ports['proto']}",
                                  "ctrl": f"tcp://127.0.0.1:{ports['ctrl']}",
                                  "telemetry": f"tcp://127.0.0.1:{tel[role]}"},
                      "protocol": {k: vals[k] for k in RIG_PROTOCOL_KEYS}, "frontend": fe}
            if role == "alice":
                tables["metrics"] = {"port": mport, "addr": "127.0.0.1"}
            (d / f"{role}.toml").write_text(render_node_file(tables))
        for role in ("alice", "bob"):
            with open(logs[role], "w") as fh:
                procs[role] = subprocess.Popen([a.qkd, role, "--config", f"{role}.toml"], cwd=d,
                                               stdout=fh, stderr=subprocess.STDOUT, env=env)
        with open(logs["monitor"], "w") as fh:
            procs["monitor"] = subprocess.Popen(
                [a.qkd, "monitor", "--dashboard", "--refresh", "5", "--connect",
                 f"tcp://127.0.0.1:{tel['alice']}", f"tcp://127.0.0.1:{tel['bob']}"],
                cwd=d, stdout=fh, stderr=subprocess.STDOUT, env=env)
        t0 = time.monotonic()
        print(f"soak in {d}: rig, alice, bob, monitor started; {a.minutes:g} min, a sample every "
              f"{a.every:g} s", flush=True)
        with open(d / "soak.jsonl", "w") as out:
            while True:
                row: dict = {"t_s": round(time.monotonic() - t0, 1)}
                for name, p in procs.items():
                    if p.poll() is not None:
                        row[f"{name}_exit"] = p.returncode
                    else:
                        row[name] = proc_sample(p.pid)
                for f in FILES + tuple(x.name for x in logs.values()):
                    row[f"size:{f}"] = _size(d / f)
                for role in ("alice", "bob"):
                    row[f"{role}_status"] = _last_status(logs[role])
                    row[f"{role}_pads"] = pad_sample(d / f"{role}.db", d / f"{role}.psk")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
                        row["metrics_bytes"] = len(r.read())
                except OSError:
                    row["metrics_bytes"] = None
                rows.append(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
                st = row["bob_status"]
                print(f"[{row['t_s']:7.1f} s] " + "  ".join(
                    f"{n} rss {row[n].get('rss_kb', 0) / 1024:.1f}M fd {row[n].get('fds')} thr "
                    f"{row[n].get('threads')}" for n in ("alice", "bob", "monitor") if n in row)
                    + f"  db {row['size:alice.db'] >> 10}k/{row['size:bob.db'] >> 10}k wal "
                      f"{row['size:alice.db-wal'] >> 10}k/{row['size:bob.db-wal'] >> 10}k"
                    + f"  blocks {st.get('blocks')} secret {st.get('secret_bits')}", flush=True)
                if any(f"{n}_exit" in row for n in ("alice", "bob")):
                    print("a node exited early: see its log", flush=True)
                    break
                if time.monotonic() - t0 >= a.minutes * 60:
                    break
                time.sleep(max(0.0, a.every - (time.monotonic() - t0) % a.every))
    finally:
        _stop(procs)
    print(f"\ngrowth per hour over the second half ({len(rows)} samples):")
    for name in ("alice", "bob", "monitor", "rig"):
        for q in ("rss_kb", "fds", "threads", "tcp_sockets"):
            g = growth_per_hour(rows, lambda r, n=name, k=q: r.get(n, {}).get(k))
            if g is not None:
                print(f"  {name:8} {q:12} {g:12.1f} /h  (last {rows[-1].get(name, {}).get(q)})")
    for f in (*FILES, "metrics_bytes",
              *[f"{n}.log" for n in logs]):
        key = f if f == "metrics_bytes" else f"size:{f}"
        g = growth_per_hour(rows, lambda r, k=key: r.get(k))
        if g is not None:
            print(f"  {f:21} {g:12.0f} bytes/h  (last {rows[-1].get(key)})")
    for role in ("alice", "bob"):
        for s in sorted(rows[-1].get(f"{role}_pads", {})):
            for q in ("left_pads", "stored_bytes"):
                g = growth_per_hour(rows, lambda r, k=role, s=s, q=q: r[f"{k}_pads"].get(s, {}).get(q))
                if g is not None:
                    print(f"  {role} pool {s:16} {q:12} {g:10.0f} /h  (last "
                          f"{rows[-1][f'{role}_pads'][s][q]})")
    for role in ("alice", "bob"):
        g = growth_per_hour(rows, lambda r, k=role: r[f"{k}_status"].get("secret_bits"))
        if g is not None:
            print(f"  {role} secret rate over the second half {g / 3600:.0f} bits per wall-clock second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
