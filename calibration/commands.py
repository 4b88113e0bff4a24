"""``qkd calibrate timing|polarization|efficiency``: the calibration routines against real or emulated
instruments.

What it is for: a lab engineer's entry point. With ``--config lab.toml`` the
instruments named in the lab file are used (``alice.pattern_generator``,
``bob.time_tagger``, ``bob.polarization`` or ``bob.paddles``); without it the
emulated HIL rig (``hil.rig.Rig``) is started and the same production drivers
talk to its twins. Either way the routines only see drivers. Timing results
are written into ``[bob.timing]`` of the file given by ``--save`` (default:
the ``--config`` file). Progress goes to the log, the summary to stdout.

``qkd calibrate efficiency`` bounds Bob's detector efficiency ratio for one mode (the pulses'
arrival time in his window, ``--shift-ps``) from reference frames (``calibration.efficiency``);
the lab repeats it across the window and its filter's band and sets
``detector_efficiency_ratio_min`` in both node files to the smallest bound.

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
    p.add_argument("what", choices=("timing", "polarization", "efficiency", "tracking"),
                   help="which calibration to run (efficiency: a lower bound on Bob's detector "
                        "efficiency ratio for one mode; tracking: an emulated run of the drift loop)")
    p.add_argument("--config", help="lab TOML file naming the instruments (default: start the emulated rig)")
    p.add_argument("--save", help="lab TOML file to write [bob.timing] into (default: --config)")
    p.add_argument("--scenario", default=None,
                   help="rig scenario (without --config; default drifting-fiber, long-100km for efficiency)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--controller", choices=("epc400", "mpc320"), default="epc400")
    p.add_argument("--frame-slots", type=int, default=None,
                   help="slots per frame (default 65536; polarization --config: the lab file's "
                        "[bob.timing].frame_slots)")
    p.add_argument("--clock-hz", type=float, default=1e9, help="Alice's slot clock (with --config)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"timing: frames of tags to use (default {TIMING_FRAMES}); efficiency: reference "
                        f"frames to count (default {EFFICIENCY_FRAMES})")
    p.add_argument("--afterpulse-residual", type=float, default=None, metavar="P",
                   help="timing: afterpulse probability per click the afterpulse guard may leave "
                        "beyond it (default 1e-4)")
    p.add_argument("--probe-frames", type=int, default=8, help="polarization: frames per measurement")
    p.add_argument("--mu", type=float, nargs=3, default=None, help="timing: mean photon numbers per class")
    p.add_argument("--plot", metavar="PNG", help="write a PNG: timing histograms with the window, or QBER "
                   "and controller settings against measurement/time (needs the [plot] extra)")
    p.add_argument("--split-z-optical", type=float, default=None, metavar="P",
                   help="efficiency: share of light Bob's splitter sends to the Z arm, from a power "
                        "meter (required with --config; the rig's own without)")
    p.add_argument("--intensity-class", type=int, default=0,
                   help="efficiency: Alice's intensity class for the reference light (weak enough that "
                        "no detector clicks on more than 1 %% of the pulses)")
    p.add_argument("--shift-ps", type=float, default=0.0,
                   help="efficiency: move Bob's detection offsets by this much (the pulses' arrival time "
                        "within his window is the mode measured)")
    p.add_argument("--sigmas", type=float, default=5.0, help="efficiency: statistical margin of the bound")
    p.add_argument("--seconds", type=float, default=10.0, help="tracking: emulated seconds")
    p.add_argument("--drift", type=float, default=0.1, help="tracking: fiber drift in rad/sqrt(s)")


#: --frame-slots when not given (and, with --config polarization, no [bob.timing] to take it from)
DEFAULT_FRAME_SLOTS = 1 << 16
#: --frames when not given
TIMING_FRAMES = 40
EFFICIENCY_FRAMES = 200
#: the rig scenario when --scenario is not given: a drifting fiber for timing and polarization;
#: for efficiency 100 km, where Alice's signal class stays in the detectors' linear regime (a lab
#: attenuates its reference light instead)
DEFAULT_SCENARIO = {"efficiency": "long-100km"}


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

    if args.frames is None:
        args.frames = TIMING_FRAMES
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


def _lab_timing(args: argparse.Namespace) -> tuple[dict | None, int]:
    """With --config: the lab file's [bob.timing] (Bob's offsets and window) and, when
    --frame-slots is not given, its frame length; (None, 0) on the rig; (None, 2) after saying
    what is missing."""
    if not args.config:
        return None, 0
    from drivers.config import load_lab

    path = args.save or args.config
    sec = load_lab(path).timing
    if not sec:
        print(f"error: {path}: no [bob.timing] section: run `qkd calibrate timing --config {path} "
              f"--frame-slots N` first")
        return None, 2
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
        return None, 2
    return sec, 0


def _bob_timing(sec: dict | None, rig):
    from link.frontend import Timing

    if rig is not None:
        return Timing.for_model(rig.model)
    # the dead-time guard as `qkd bob` sets it: every detector alive at each kept event
    guard_ns = max(float(sec.get("dead_time_ns") or 0.0), float(sec.get("afterpulse_guard_ns") or 0.0))
    return Timing(sec["nominal_period_ps"], sec["frame_slots"], tuple(sec["offsets_ps"]), sec["window_ps"],
                  guard_ns * 1e3)


def _polarization(args: argparse.Namespace) -> int:
    from calibration.polarization import LinkProbe, PolarizationError, align
    from link.frontend import DriverAlice, DriverBob

    sec, rc = _lab_timing(args)
    if rc:
        return rc
    with _instruments(args) as (build, clock_hz, frame_slots, _mu, rig):
        key = "bob.polarization" if args.controller == "epc400" else "bob.paddles"
        timing = _bob_timing(sec, rig)
        awg, tagger, dev = build("alice.pattern_generator"), build("bob.time_tagger"), build(key)
        awg.open()
        tagger.open()
        dev.open()
        alice = DriverAlice(awg, frame_slots, clock_hz)
        bob = DriverBob(tagger, timing)
        t0 = time.monotonic()
        try:
            probe = LinkProbe(alice, bob, frames=args.probe_frames, seed=args.seed, poll_s=0.02)
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


def _efficiency(args: argparse.Namespace) -> int:
    """One mode's lower bound on Bob's detector efficiency ratio (``calibration.efficiency``):
    Alice sends reference frames (random states, one intensity class), Bob's slotter counts
    single clicks per (state, detector), and the four detectors' click rates summed over the
    states, divided by their arm's optical share, give the ratio. The mode is the pulses'
    arrival time in Bob's window: ``--shift-ps`` moves his detection offsets by that much
    (pulses then arrive that much earlier within the window); the lab runs it across the
    window and over its filter's band and sets ``detector_efficiency_ratio_min`` to the
    smallest bound. Bob's dead-time guard (the lab file's ``dead_time_ns``; the rig's exact
    one) keeps only events at which every detector was alive, so a busier detector's dead
    time does not make it look weaker."""
    import dataclasses

    from calibration.efficiency import EfficiencyError, efficiency_ratio_bound, sigma_note
    from calibration.polarization import LinkProbe, PolarizationError
    from link.frontend import DriverAlice, DriverBob

    sec, rc = _lab_timing(args)
    if rc:
        return rc
    if args.config and args.split_z_optical is None:
        print("error: --split-z-optical is required with --config: the share of light Bob's splitter "
              "sends to the Z arm, measured with a power meter at each arm's output (click counts "
              "alone cannot tell an arm's light from its detectors' efficiency)")
        return 2
    frames = args.frames if args.frames is not None else EFFICIENCY_FRAMES
    if frames < 1:
        print(f"error: --frames {frames}: need at least one frame")
        return 2
    with _instruments(args) as (build, clock_hz, frame_slots, mu, rig):
        split = args.split_z_optical if args.split_z_optical is not None else rig.model.scenario.bob.p_z
        if not 0.0 < split < 1.0:
            print(f"error: --split-z-optical {split}: must lie in (0, 1)")
            return 2
        if not 0 <= args.intensity_class < len(mu):
            print(f"error: --intensity-class {args.intensity_class}: Alice has classes 0..{len(mu) - 1}")
            return 2
        timing = _bob_timing(sec, rig)
        if args.shift_ps:
            timing = dataclasses.replace(timing,
                                         offsets_ps=tuple(o + args.shift_ps for o in timing.offsets_ps))
        awg, tagger = build("alice.pattern_generator"), build("bob.time_tagger")
        awg.open()
        tagger.open()
        alice = DriverAlice(awg, frame_slots, clock_hz)
        bob = DriverBob(tagger, timing)
        counts, sent = np.zeros((4, 4), np.int64), np.zeros(4, np.int64)
        t0 = time.monotonic()
        try:
            probe = LinkProbe(alice, bob, frames=min(frames, 10), seed=args.seed, poll_s=0.02,
                              intensity=args.intensity_class)
            done = 0
            while done < frames:
                m = probe.measure()
                counts += m.counts
                sent += m.sent
                done += probe.frames
                print(f"  {done}/{frames} frames: clicks H V D A "
                      + " ".join(str(int(v)) for v in counts.sum(axis=0)), flush=True)
            r = efficiency_ratio_bound(counts, sent, split, sigmas=args.sigmas)
        except (EfficiencyError, PolarizationError) as exc:
            print(f"error: {exc}")
            return 1
        finally:
            bob.close()
            alice.close()
        where = (f"arrival shifted {args.shift_ps:+g} ps in the window" if args.shift_ps
                 else "nominal arrival time")
        print(f"{sigma_note(r)}; {where}, intensity class {args.intensity_class} "
              f"(mu {mu[args.intensity_class]:g}), {int(sent.sum())} pulses, split_z_optical {split:g}, "
              f"{args.sigmas:g} sigma")
        print(f"wall {time.monotonic() - t0:.1f} s")
        if rig is not None:
            eff = [d.efficiency for d in rig.model.detectors]
            print(f"  rig truth ratio {min(eff) / max(eff):.4f}")
        print(f"for this mode: detector_efficiency_ratio_min <= {r.ratio_min:.4f} ([protocol] of both node "
              "files takes the smallest over the window positions and wavelengths measured; more frames "
              "narrow the margin)")
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


@command("calibrate", "timing, polarization, efficiency or tracking calibration (emulated rig unless "
         "--config)", _add)
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

    if args.scenario is None:
        args.scenario = DEFAULT_SCENARIO.get(args.what, "drifting-fiber")
    try:
        return {"timing": _timing, "polarization": _polarization, "efficiency": _efficiency,
                "tracking": _tracking}[args.what](args)
    except (ConfigError, DriverError) as exc:   # a bad lab file, an instrument that does not answer
        print(f"error: {exc}", file=sys.stderr)
        return 2
