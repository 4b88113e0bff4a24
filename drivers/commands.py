"""``qkd devices``: check the instruments of a lab file, or run their emulated twins.

What it is for: ``qkd devices check --config lab.toml`` connects to every
instrument of the file, identifies it (a wrong model is refused by the driver)
and prints one status line per instrument; the exit code is 0 only if all of
them answered.  ``qkd devices emulate [--config lab.toml]`` starts the
emulated twins (on the file's 127.0.0.1 ports and device paths, or on free
ones) and prints the lab file that reaches them.

What it must not do: change an instrument's settings (``check`` only reads),
or hide a failure (each row shows the error class and message, which name the
command that failed).
"""

from __future__ import annotations

import argparse
import sys
import time

from link.cli import command

from .base import Identity
from .config import ConfigError, load_lab
from .errors import DriverError


def _add(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="devices_cmd", metavar="ACTION")
    c = sub.add_parser(
        "check", help="connect to each instrument of a lab file, identify it, print its status"
    )
    c.add_argument("--config", required=True, help="lab TOML file")
    c.add_argument("--node", choices=("alice", "bob"), help="only this node's instruments")
    e = sub.add_parser("emulate", help="run the emulated twins of a lab file (or of every driver)")
    e.add_argument("--config", help="lab TOML file whose 127.0.0.1 ports / device paths the emulators take")
    e.add_argument(
        "--duration-s", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )
    e.add_argument("--scenario", help="run the whole HIL rig for this scenario (name or TOML path): "
                   "the twins of both nodes joined by the physical model")
    e.add_argument("--seed", type=int, default=1, help="the physical model's seed (with --scenario)")


def _fmt_status(st: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in st.items())


def _cell(value: object) -> str:
    """One table cell on one line: a message with line breaks (pyvisa-py's "Please install
    PyUSB ...\nNo module named 'usb'") would break the table's rows."""
    return " ".join(str(value).split())


def check(config: str, node: str | None = None, out=None) -> int:
    out = out or sys.stdout
    try:
        lab = load_lab(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    failed = 0
    for inst in lab:
        if node and inst.node != node:
            continue
        drv = inst.build()
        t0 = time.monotonic()
        try:
            ident = drv.open() if hasattr(drv, "open") else None
            if isinstance(ident, Identity):
                who = (
                    f"{ident.manufacturer} {ident.model} sn={ident.serial or '-'} fw={ident.firmware or '-'}"
                )
            else:
                who = str(getattr(drv, "name", inst.driver))
            if hasattr(drv, "status"):
                status = _fmt_status(drv.status())
            elif hasattr(drv, "random_bytes"):  # a random source: prove it delivers (values not shown)
                status = f"is_quantum={drv.is_quantum} read {drv.random_bytes(4096).size} bytes"
            else:
                status = ""
            result = "ok"
        except DriverError as e:
            failed += 1
            result, who, status = type(e).__name__, "", str(e)
        finally:
            if hasattr(drv, "close"):
                drv.close()
        rows.append(
            (
                inst.key,
                inst.driver,
                inst.resource,
                result,
                who,
                status,
                f"{(time.monotonic() - t0) * 1e3:.0f} ms",
            )
        )
    head = ("instrument", "driver", "resource", "result", "identity", "status", "time")
    rows = [tuple(_cell(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 2)]
    for r in [head, *rows]:
        cells = [c.ljust(w) for c, w in zip(r[:-2], widths, strict=False)]
        print("  ".join(cells + [r[-1], r[-2]]).rstrip(), file=out)
    print(f"{len(rows) - failed}/{len(rows)} instruments answered", file=out)
    return 1 if failed else 0


def _wait(duration_s: float | None) -> None:
    try:
        if duration_s is None:
            while True:
                time.sleep(3600)
        else:
            time.sleep(max(duration_s, 0.0))
    except KeyboardInterrupt:
        pass


def _rig_node_hints(rig) -> list[str]:
    """What the node files (link/config.py) need for this rig, beyond the lab file: the
    scenario's intensities and the protocol choices ``qkd run`` makes (link.pipeline), the
    frame and clock, and Bob's detector offsets and window (the rig's exact timing, which
    ``qkd calibrate timing --config`` measures on real instruments) and the longest dead time
    of his detectors (for the slotter's dead-time guard)."""
    from link.config import RIG_PROTOCOL_KEYS, _toml_value
    from link.frontend import Timing
    from link.pipeline import config_for_scenario

    cfg = config_for_scenario(rig.scenario)
    tm = Timing.for_model(rig.model)
    # every key qkd run sets for the rig (link.config.RIG_PROTOCOL_KEYS), so a node file written
    # from these hints is the one qkd run uses (bench.soak and tests/rig_nodes.py read them)
    protocol = ", ".join(f"{k} = {_toml_value(getattr(cfg, k))}" for k in RIG_PROTOCOL_KEYS)
    return [
        "Node files (link/config.py) for qkd alice / qkd bob on this rig, besides [node] and [channel]:",
        f"  [protocol]  {protocol}",
        f'  [frontend]  lab = "<this lab file>", frame_slots = {rig.frame_slots}, '
        f"clock_hz = {rig.model.clock_hz:g}, "
        'instrument = "pattern_generator" (Alice) or "time_tagger" (Bob)',
        f"  Bob's [frontend] also: offsets_ps = [{', '.join(f'{o:.1f}' for o in tm.offsets_ps)}], "
        f"window_ps = {tm.window_ps:.1f}, dead_time_ns = {tm.dead_time_ps / 1e3:g}",
    ]


def emulate_rig(scenario: str, seed: int, duration_s: float | None, out=None) -> int:
    """Start ``hil.Rig`` for a scenario and print the lab file of its instruments."""
    out = out or sys.stdout
    from hil.rig import Rig
    from hil.scenario import ScenarioError

    try:
        rig = Rig(scenario, seed)
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with rig:
        t = rig.timing()
        print(f"# HIL rig: scenario {rig.scenario.name!r}, seed {seed}, {t['frame_slots']} slots per "
              f"frame at {t['clock_hz']:.3g} Hz; Ctrl-C stops it", file=out)
        print("# Alice's AWG takes one sample a slot (the encoding table below); each uploaded "
              "pattern is one frame", file=out)
        for line in _rig_node_hints(rig):
            print(f"# {line}", file=out)
        print(rig.lab_toml(), file=out, flush=True)
        _wait(duration_s)
    return 0


def emulate(config: str | None, duration_s: float | None, out=None) -> int:
    out = out or sys.stdout
    from hil.emulated.lab import start_emulated_lab

    try:
        lab_cfg = load_lab(config) if config else None
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        lab = start_emulated_lab(lab_cfg)
    except (OSError, ValueError) as e:    # a port in use, a device path that is a real file
        print(f"error: {config or 'the default twins'}: {e} (another `qkd devices emulate`, or the real "
              "instrument, on it? stop it or change the resource in the lab file)", file=sys.stderr)
        return 2
    with lab:
        print(f"# {len(lab.servers)} emulated instruments running; Ctrl-C stops them", file=out)
        print(lab.lab_toml(), file=out, flush=True)
        _wait(duration_s)
    return 0


@command("devices", "check the instruments of a lab file, or run their emulated twins", _add)
def _devices(args: argparse.Namespace) -> int:
    if args.devices_cmd == "check":
        return check(args.config, args.node)
    if args.devices_cmd == "emulate":
        if args.scenario:
            return emulate_rig(args.scenario, args.seed, args.duration_s)
        return emulate(args.config, args.duration_s)
    print("usage: qkd devices {check,emulate} ... (see qkd devices -h)", file=sys.stderr)
    return 2
