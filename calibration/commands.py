"""``qkd calibrate timing|polarization``: the calibration routines against real or emulated instruments.

What it is for: a lab engineer's entry point. With ``--config lab.toml`` the
instruments named in the lab file are used (``alice.pattern_generator``,
``bob.time_tagger``, ``bob.polarization`` or ``bob.paddles``); without it the
emulated HIL rig (``hil.rig.Rig``) is started and the same production drivers
talk to its twins. Either way the routines only see drivers. Timing results
are written into ``[bob.timing]`` of the file given by ``--save`` (default:
the ``--config`` file). Progress goes to the log, the summary to stdout.

``qkd calibrate tracking`` runs the drift loop (``calibration.tracking``) on the block-level
emulated link for ``--seconds`` at ``--drift`` rad/sqrt(s) (``bench/tracking_run.py``); on a real
link the loop runs inside ``qkd bob`` (``[calibration] track_polarization = true``). ``--plot PNG``
draws the timing histograms with the window, or QBER and settings against step/time
(``calibration.plots``; matplotlib is the optional ``[plot]`` extra, checked before any light is
spent).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from link.cli import command


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=("timing", "polarization", "tracking"),
                   help="which calibration to run (tracking: an emulated run of the drift loop)")
    p.add_argument("--config", help="lab TOML file naming the instruments (default: start the emulated rig)")
    p.add_argument("--save", help="lab TOML file to write [bob.timing] into (default: --config)")
    p.add_argument("--scenario", default="drifting-fiber", help="rig scenario (without --config)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--controller", choices=("epc400", "mpc320"), default="epc400")
    p.add_argument("--frame-slots", type=int, default=None,
                   help="slots per frame (default 65536; polarization --config: the lab file's "
                        "[bob.timing].frame_slots)")
    p.add_argument("--clock-hz", type=float, default=1e9, help="Alice's slot clock (with --config)")
    p.add_argument("--frames", type=int, default=40, help="timing: frames of tags to use")
    p.add_argument("--afterpulse-residual", type=float, default=None, metavar="P",
                   help="timing: afterpulse probability per click the afterpulse guard may leave "
                        "beyond it (default 1e-4)")
    p.add_argument("--probe-frames", type=int, default=8, help="polarization: frames per measurement")
    p.add_argument("--mu", type=float, nargs=3, default=None, help="timing: mean photon numbers per class")
    p.add_argument("--plot", metavar="PNG", help="write a PNG: timing histograms with the window, or QBER "
                   "and controller settings against measurement/time (needs the [plot] extra)")
    p.add_argument("--seconds", type=float, default=10.0, help="tracking: emulated seconds")
    p.add_argument("--drift", type=float, default=0.1, help="tracking: fiber drift in rad/sqrt(s)")


#: --frame-slots when not given (and, with --config polarization, no [bob.timing] to take it from)
DEFAULT_FRAME_SLOTS = 1 << 16


@contextlib.contextmanager
def _instruments(args: argparse.Namespace):
    """(resources dict or lab config, builder(key) -> driver, clock_hz, frame_slots, mu, timing_truth)."""
    if args.config:
        from drivers.config import load_lab

        lab = load_lab(args.config)

        def build(key: str):
            node, _, role = key.partition(".")
            return lab.build(node, role)       # ConfigError naming the roles the file has

        frame_slots = args.frame_slots or DEFAULT_FRAME_SLOTS
        yield build, args.clock_hz, frame_slots, tuple(args.mu or (0.5, 0.1, 0.0)), None
        return
    from drivers.keysight_awg import Keysight33500
    from drivers.oz_epc400 import OzEpc400
    from drivers.picoquant import PicoQuantStreamTagger
    from drivers.thorlabs_mpc320 import ThorlabsMpc320
    from hil.rig import RIG_ENCODING, Rig

    rig = Rig(args.scenario, seed=args.seed, frame_slots=args.frame_slots or DEFAULT_FRAME_SLOTS,
              controller=args.controller)
    rig.start()
    try:
        res = rig.resources()
        kinds = {"alice.pattern_generator": lambda r: Keysight33500(r, encoding=RIG_ENCODING),
                 "bob.time_tagger": PicoQuantStreamTagger, "bob.polarization": OzEpc400,
                 "bob.paddles": ThorlabsMpc320}

        def build(key: str):
            return kinds[key](res[key])

        print(f"emulated rig: scenario {rig.scenario.name}, seed {args.seed}, {rig.frame_slots} slots/frame")
        yield build, rig.model.clock_hz, rig.frame_slots, tuple(args.mu or rig.model.mu), rig
    finally:
        rig.stop()


def _timing(args: argparse.Namespace) -> int:
    from calibration.timing import TimingError, calibrate_timing, save_toml, timing_section

    with _instruments(args) as (build, clock_hz, frame_slots, mu, rig):
        awg, tagger = build("alice.pattern_generator"), build("bob.time_tagger")
        awg.open()
        tagger.open()
        rng = np.random.default_rng(args.seed)
        pats = []
        ts, cs = [], []
        t0 = time.monotonic()
        try:
            tagger.start_stream()
            from link.frontend import DriverAlice

            alice = DriverAlice(awg, frame_slots, clock_hz)
            for _ in range(args.frames + 2):     # two more: the last frames' clicks arrive a ToF later
                inten = rng.choice(3, frame_slots, p=[0.7, 0.2, 0.1]).astype(np.uint8)
                alice.emit(rng.integers(0, 2, frame_slots, dtype=np.uint8),
                           rng.integers(0, 2, frame_slots, dtype=np.uint8), inten)
                pats.append(inten)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                b = tagger.read_tags(timeout_s=0.2)
                ts.append(b.t_ps)
                cs.append(b.channel)
                if sum(int(np.count_nonzero(c == 0)) for c in cs) >= args.frames + 2:
                    break
        finally:
            with contextlib.suppress(Exception):
                tagger.stop_stream()
            tagger.close()
            awg.close()
        t, c = np.concatenate(ts), np.concatenate(cs)
        syncs = np.flatnonzero(c == 0)
        if len(syncs) < args.frames + 1:
            print(f"error: only {len(syncs)} sync tags arrived in 60 s: is the pattern generator playing "
                  f"frames of {frame_slots} slots (--frame-slots) at {clock_hz:g} Hz (--clock-hz), and is "
                  "its sync output on the tagger's sync channel?")
            return 1
        keep = t < t[syncs[args.frames]]          # whole frames only: up to the sync after the last used
        try:
            extra = ({} if args.afterpulse_residual is None else
                     {"afterpulse_residual": float(args.afterpulse_residual)})
            cal = calibrate_timing(t[keep], c[keep], pats[:args.frames], frame_slots=frame_slots,
                                   clock_hz=clock_hz, mu=mu, resolution_ps=float(tagger.resolution_ps),
                                   **extra)
        except (TimingError, ValueError) as exc:
            print(f"error: {exc}")
            return 1
        print(cal.summary())
        print(f"wall {time.monotonic() - t0:.1f} s")
        if args.plot:
            from calibration.plots import plot_timing

            print(f"plot: {plot_timing(t[keep], c[keep], cal, args.plot)}")
        if rig is not None:
            from link.frontend import Timing

            exact = Timing.for_model(rig.model)
            print("  rig truth offsets " + ", ".join(f"{o:.1f}" for o in exact.offsets_ps) + " ps")
        path = args.save or args.config
        if path:
            save_toml(path, "bob.timing", timing_section(cal))
            print(f"saved [bob.timing] to {path}")
    return 0


def _polarization(args: argparse.Namespace) -> int:
    from calibration.polarization import LinkProbe, PolarizationError, align
    from link.frontend import DriverAlice, DriverBob, Timing

    sec = None
    if args.config:
        from drivers.config import load_lab

        path = args.save or args.config
        sec = load_lab(path).timing
        if not sec:
            print(f"error: {path}: no [bob.timing] section: run `qkd calibrate timing --config {path} "
                  f"--frame-slots N` first")
            return 2
        # Alice's frames must be the ones the offsets were measured on: with another length
        # (the default 65536 against a rig of 262144) no detection fell in a frame ("no
        # detections back after 16 extra frames")
        if args.frame_slots is None:
            args.frame_slots = int(sec["frame_slots"])
            print(f"{args.frame_slots} slots a frame (the lab file's [bob.timing])")
        elif args.frame_slots != sec["frame_slots"]:
            print(f"error: --frame-slots {args.frame_slots}, but {path}'s [bob.timing] was measured on "
                  f"frames of {sec['frame_slots']} slots: give that, or run `qkd calibrate timing "
                  f"--frame-slots {args.frame_slots}` first")
            return 2
    with _instruments(args) as (build, clock_hz, frame_slots, _mu, rig):
        key = "bob.polarization" if args.controller == "epc400" else "bob.paddles"
        if rig is not None:
            timing = Timing.for_model(rig.model)
        else:
            timing = Timing(sec["nominal_period_ps"], sec["frame_slots"], tuple(sec["offsets_ps"]),
                            sec["window_ps"])
        awg, tagger, dev = build("alice.pattern_generator"), build("bob.time_tagger"), build(key)
        awg.open()
        tagger.open()
        dev.open()
        alice = DriverAlice(awg, frame_slots, clock_hz)
        bob = DriverBob(tagger, timing)
        t0 = time.monotonic()
        try:
            probe = LinkProbe(alice, bob, frames=args.probe_frames, seed=args.seed, poll_s=0.2)
            res = align(dev, probe.measure, seed=args.seed)
        except PolarizationError as exc:
            print(f"error: {exc}")
            return 1
        finally:
            bob.close()
            alice.close()
            dev.close()
        print(res.summary(dev.actuator_unit))
        print(f"wall {time.monotonic() - t0:.1f} s")
        if args.plot:
            from calibration.plots import plot_alignment

            print(f"plot: {plot_alignment(res.history, args.plot, unit=dev.actuator_unit)}")
    return 0


def _tracking(args: argparse.Namespace) -> int:
    """The drift loop on the block-level emulated link (bench/tracking_run.py); on real hardware the
    loop runs inside `qkd bob` ([calibration] track_polarization = true)."""
    if args.config:
        print("error: tracking runs inside `qkd bob` with [calibration] track_polarization = true; "
              "`qkd calibrate tracking` is the emulated run")
        return 2
    from bench.tracking_run import run

    t0 = time.monotonic()
    sc = "metro-25km" if args.scenario == "drifting-fiber" else args.scenario
    # a lost lock is searched again from the key blocks' error counts, as inside `qkd bob`
    r = run("tracked", args.seconds, drift=args.drift, seed=args.seed, scenario=sc,
            controller=args.controller, recover=True)
    ez, ex = r["extra_qber_mean"]
    pz, px = r["extra_qber_p95"]
    print(f"tracked {r['emulated_s']:.1f} s of emulated link ({r['blocks']} blocks, drift {args.drift} "
          f"rad/sqrt(s)): extra QBER mean Z {ez * 100:.3f} % X {ex * 100:.3f} %, 95th percentile "
          f"Z {pz * 100:.3f} % X {px * 100:.3f} %, {r['recoveries']} recoveries from block counts, "
          f"{r['unwinds']} paddle unwinds; wall "
          f"{time.monotonic() - t0:.1f} s")
    if args.plot:
        from calibration.plots import plot_tracking

        png = plot_tracking(r["_records"], args.plot, block_s=r["block_s"],
                            unit="mV" if args.controller == "epc400" else "deg", true_extra=r["_extra"])
        print(f"plot: {png}")
    return 0


@command("calibrate", "timing, polarization or tracking calibration (emulated rig unless --config)", _add)
def _calibrate(args: argparse.Namespace) -> int:
    if args.plot:
        from calibration.plots import PlotError, require_matplotlib

        try:
            require_matplotlib()                # fail before any light is spent
        except PlotError as exc:
            print(f"error: {exc}")
            return 2
    import sys

    from drivers.config import ConfigError
    from drivers.errors import DriverError

    try:
        return {"timing": _timing, "polarization": _polarization, "tracking": _tracking}[args.what](args)
    except (ConfigError, DriverError) as exc:   # a bad lab file, an instrument that does not answer
        print(f"error: {exc}", file=sys.stderr)
        return 2
