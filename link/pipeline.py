"""Both nodes on this machine against the HIL model: what ``qkd run`` and the end-to-end test run.

What it is for: wire a complete link in one process — a pre-shared secret for
the pair, one key store and one authentication pool per node (separate SQLite
files), the two channels over real ZeroMQ sockets (ipc, or tcp on 127.0.0.1),
and ``link.frontend.ModelLink`` over ``hil.model.LinkModel`` — run it until a
number of blocks or a wall-clock limit, and report. The report's
``keys_identical`` compares the two stores key by key (IDs and a keyed digest
of the values), it is not inferred from the protocol having succeeded.

Rates: ``secret_rate_bps`` divides by the emulated time of the frames the
blocks used (the light the model emulated); ``secret_rate_wall_bps`` by the
wall-clock time of the run. On this machine the model is slower than light, so
the two differ and both are reported (DESIGN.md).

What it must not do: print (the CLI owns the terminal) or log key material.
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import zmq

from .auth import AuthPool, write_psk
from .channel import Channel
from .keystore import KeyStore, stores_identical
from .messages import MsgType
from .node import Node, NodeConfig

HIL_P_Z = 0.5
HIL_PROBS_2DECOY = (0.5, 0.3, 0.2)
HIL_PROBS_1DECOY = (0.6, 0.4)


def config_for_scenario(scenario, **overrides) -> NodeConfig:
    """Protocol settings for a HIL scenario: its intensities, our basis and intensity choice.

    The intensities, Bob's beam splitter (``receiver_split_z``, the finite-key step's
    multi-photon bound) and his detectors' efficiency ratio, the weakest over the strongest
    (``detector_efficiency_ratio_min``, its mismatch bound) are physics (the scenario's source and
    receiver). Alice's basis bias and
    intensity probabilities are the protocol's choice, made per frame by the
    engine's pattern, and the model emulates whatever pattern it is given. The
    shipped scenarios' own choice (metro-25km: p_z = 0.85, (0.4, 0.42, 0.18))
    is the Lim 2014 optimum for blocks of about 10^7 bits; for runs of a few
    seconds (blocks of 2^19-2^20 Z bits) the default run uses p_z = 0.5 and
    (0.5, 0.3, 0.2), which give more key there: measured on metro-25km, 2
    blocks, seed 1 (``run_local``, 2026-11-25), 540,487 against 471,694 secret
    bits at 2^19 and 1,156,842 against 1,113,044 at 2^20 (no block aborted with
    either). Pass ``p_z``/``intensity_probs`` to override.
    """
    src = scenario.source
    mus = tuple(float(m) for m in src.intensities)
    eff = [float(e) for e in scenario.detectors.efficiency]      # H V D A
    # the rig's detectors are the lab's measured ones: the weakest over the strongest is exact
    # (one mode only), so it is the right detector_efficiency_ratio_min (link.finite_key)
    ratio = max(1e-9, min(eff) / max(eff)) if max(eff) > 0 else 1.0
    cfg = NodeConfig(p_z=HIL_P_Z, intensities=mus, receiver_split_z=float(scenario.bob.p_z),
                     detector_efficiency_ratio_min=ratio,
                     intensity_probs=HIL_PROBS_2DECOY if len(mus) == 3 else HIL_PROBS_1DECOY,
                     finite_key="2-decoy" if len(mus) == 3 else "1-decoy", block_bits=1 << 20)
    return replace(cfg, **overrides)


class LocalPair:
    """Both nodes' key stores, authentication pools (from a fresh pre-shared secret) and
    connected channels in ``d`` on this machine: the wiring ``run_local``, ``run_replay`` and
    ``link.eve_audit`` share. The caller adds its nodes to ``nodes``; ``close`` closes nodes,
    channels, pools and stores in that order (channels before the pools their I/O threads
    use), and the ZeroMQ context."""

    def __init__(self, d: Path, link_id: str, cfg: NodeConfig, *, psk_bytes_per_stream: int = 1 << 16,
                 retry_s: float = 0.2, transport: str = "ipc",
                 bob_endpoints: Callable[[dict], dict] | None = None) -> None:
        self.ctx = zmq.Context()
        self._ipc = [d / "proto.sock", d / "ctrl.sock"] if transport == "ipc" else []
        self.nodes: dict[str, Node] = {}
        self.stores: dict[str, KeyStore] = {}
        self.pools: dict[str, AuthPool] = {}
        self.channels: dict[str, Channel] = {}
        write_psk(d / "link.psk", link_id, psk_bytes_per_stream)
        try:
            for role in ("alice", "bob"):
                self.stores[role] = KeyStore(d / f"{role}.db", link_id, key_size_bits=cfg.key_size_bits,
                                             auth_refill_bytes=cfg.auth_refill_bytes)
                self.pools[role] = AuthPool(d / "link.psk", d / f"{role}.db", role)
                self.channels[role] = Channel(role, self.pools[role], ctx=self.ctx, retry_s=retry_s)
            cha, chb = self.channels["alice"], self.channels["bob"]
            eps = cha.bind(f"ipc://{d}/proto.sock", f"ipc://{d}/ctrl.sock") if transport == "ipc" \
                else cha.bind()
            chb.connect(**(bob_endpoints(eps) if bob_endpoints is not None else eps))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for n in self.nodes.values():
            n.close()
        for ch in self.channels.values():
            ch.close()
        for pool in self.pools.values():
            pool.close()
        for store in self.stores.values():
            store.close()
        self.ctx.destroy(linger=0)
        for sock in self._ipc:          # the channel's socket files: not part of a kept run folder
            sock.unlink(missing_ok=True)


def run_local(scenario: str | None = None, *, blocks: int = 3, duration_s: float = 90.0,
              seed: int = 1, workdir: str | os.PathLike | None = None, config: NodeConfig | None = None,
              progress: Callable[[dict], None] | None = None, transport: str = "ipc",
              stop_event=None, bob_endpoints: Callable[[dict], dict] | None = None,
              psk_bytes_per_stream: int = 1 << 16, retry_s: float = 0.2,
              instruments: str = "model",
              attach: Callable[[dict[str, Node]], Callable[[], None]] | None = None) -> dict:
    """Run both nodes on the HIL model until ``blocks`` blocks finished (or ``duration_s``).

    ``instruments="model"`` hands the nodes the physical model in this process
    (``link.frontend.ModelLink``: tags and slotting, no wire protocols);
    ``instruments="rig"`` starts ``hil.rig.Rig`` and the nodes drive its
    emulated instruments through the production drivers (Alice's AWG over
    SCPI, Bob's PicoQuant T2 stream), as a lab's nodes drive real ones.
    ``bob_endpoints(alice_endpoints) -> endpoints`` lets a test put something
    (a fault-injecting proxy) between the nodes. ``attach(nodes) -> detach``
    starts services on the running nodes (KMEs, metrics, a telemetry log;
    ``link.services``); ``detach()`` runs before the nodes close.
    """
    if instruments not in ("model", "rig"):
        raise ValueError(f"instruments: expected 'model' or 'rig', got {instruments!r}")
    from drivers.qrng import OsEntropySource
    from hil.model import LinkModel

    from .frontend import ModelLink

    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="qkd-run-")
        workdir = own_tmp.name
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    model = LinkModel(scenario, seed=seed)
    cfg = config or config_for_scenario(model.scenario)
    link_id = f"hil-{model.scenario.name}"
    rig = fe_alice = fe_bob = None
    if instruments == "rig":
        fe_alice, fe_bob, rig = _rig_front_ends(model.scenario, seed)
        ml = rig.stats          # has emulated_s, like ModelLink
        model = rig.model       # the rig's frames (capped by the AWG memory)
    else:
        ml = ModelLink(model)
        fe_alice, fe_bob = ml.alice, ml.bob
    rng = OsEntropySource()
    pair: LocalPair | None = None
    detach: Callable[[], None] | None = None
    t0 = time.monotonic()
    try:
        pair = LocalPair(d, link_id, cfg, psk_bytes_per_stream=psk_bytes_per_stream, retry_s=retry_s,
                         transport=transport, bob_endpoints=bob_endpoints)
        nodes, stores, ctx = pair.nodes, pair.stores, pair.ctx
        cha, chb = pair.channels["alice"], pair.channels["bob"]
        nodes["alice"] = Node("alice", cha, stores["alice"], fe_alice, rng, cfg, ctx=ctx, block_limit=blocks)
        nodes["bob"] = Node("bob", chb, stores["bob"], fe_bob, rng, cfg, ctx=ctx,
                            frame_slots=model.frame_slots)
        for n in nodes.values():
            n.start()
        if attach is not None:
            detach = attach(nodes)
        alice, bob = nodes["alice"], nodes["bob"]
        end = t0 + duration_s
        last = 0.0
        while time.monotonic() < end and not (stop_event is not None and stop_event.is_set()):
            if alice.stopped or bob.stopped:
                break
            done_a = alice.blocks_done
            if done_a >= blocks and bob.blocks_done >= blocks and alice.idle() \
                    and not stores["bob"].prepared_blocks():
                break
            if progress is not None and time.monotonic() - last >= 0.5:
                last = time.monotonic()
                progress(_summary(nodes, stores, ml, t0, final=False, scenario=model.scenario.name))
            time.sleep(0.02)
        try:
            cha.send(MsgType.STOP, 0, lane="ctrl")
            cha.wait_acked(2.0)
        except Exception:  # noqa: BLE001 - best effort at the end of a run
            pass
        for n in nodes.values():
            n.stop()
        summary = _summary(nodes, stores, ml, t0, final=True, scenario=model.scenario.name)
        summary["workdir"] = str(d) if own_tmp is None else None
        return summary
    finally:
        if detach is not None:
            detach()
        if pair is not None:
            pair.close()
        if rig is not None:
            for fe in (fe_alice, fe_bob):
                try:
                    fe.close()
                except Exception:  # noqa: BLE001 - the rig is going away anyway
                    pass
            rig.stop()
        if own_tmp is not None:
            own_tmp.cleanup()


def _rig_front_ends(scenario, seed: int):
    """Start the HIL rig and open the production drivers on its emulated instruments."""
    from drivers.keysight_awg import Keysight33500
    from drivers.picoquant import PicoQuantStreamTagger
    from hil.rig import RIG_ENCODING, Rig

    from .frontend import DriverAlice, DriverBob, Timing

    rig = Rig(scenario, seed).start()
    try:
        res = rig.resources()
        awg = Keysight33500(res["alice.pattern_generator"], encoding=RIG_ENCODING)
        awg.open()
        tagger = PicoQuantStreamTagger(res["bob.time_tagger"])
        tagger.open()
        return (DriverAlice(awg, rig.frame_slots, rig.model.clock_hz),
                DriverBob(tagger, Timing.for_model(rig.model)), rig)
    except BaseException:
        rig.stop()
        raise


class ReplayLink:
    """Front ends that replay recorded frames from memory (no emulation cost), for benchmarks.

    ``record(model, n_frames, cfg)`` runs the model once; then Alice's node takes
    her patterns from ``patterns(f)`` (frame ``f`` replays recorded frame
    ``f % n``) and Bob's front end hands back the matching detections. Only the
    engine's own work remains: sifting, estimation, reconciliation, hashing,
    channel and store.
    """

    def __init__(self, frames: list[tuple], frame_slots: int, clock_hz: float) -> None:
        import queue

        self.frames = frames
        self.frame_slots = frame_slots
        self.clock_hz = clock_hz
        self._q: queue.Queue = queue.Queue()
        self._sig = None          # run_replay_processes: frame numbers from Alice's process to Bob's
        link = self

        class _A:
            frame_slots = link.frame_slots
            clock_hz = link.clock_hz

            def __init__(self):
                self.n = 0

            def emit(self, basis, bit, intensity):
                link._emit(self.n)
                self.n += 1

            def emit_packed(self, pattern):
                link._emit(self.n)
                self.n += 1

            def close(self):
                pass

        class _B:
            def poll(self, timeout_s):
                import queue as _queue
                q = link._sig if link._sig is not None else link._q
                out = []
                try:
                    out.append(q.get(timeout=timeout_s))
                    while True:
                        out.append(q.get_nowait())
                except _queue.Empty:
                    pass
                return [link._detections(f) for f in out] if link._sig is not None else out

            def close(self):
                pass

        self.alice, self.bob = _A(), _B()

    @classmethod
    def record(cls, model, n_frames: int, cfg: NodeConfig, seed: int = 0) -> ReplayLink:
        import numpy as np

        from postproc_c.pattern import pack_pattern

        from .frontend import ModelLink

        ml = ModelLink(model)
        rng = np.random.default_rng(seed)
        n = model.frame_slots
        pats = []
        dets = []
        for _ in range(n_frames):
            basis = (rng.random(n) >= cfg.p_z).astype(np.uint8)
            bit = rng.integers(0, 2, n, dtype=np.uint8)
            inten = rng.choice(len(cfg.intensity_probs), n, p=list(cfg.intensity_probs)).astype(np.uint8)
            ml.alice.emit(basis, bit, inten)
            # Alice's patterns kept packed with their class counts (postproc_c.pattern), as
            # her node keeps them: replaying costs a 512 KiB copy per frame, not 3 MiB
            pats.append(pack_pattern(basis, bit, inten))
            dets += ml.bob.poll(0.0)     # drain as we go: the model's tag queue is bounded
        deadline = time.monotonic() + 60
        while len(dets) < n_frames - 4 and time.monotonic() < deadline:
            dets += ml.bob.poll(0.2)
        frames = [(pats[d.frame_index], d) for d in dets]
        return cls(frames, n, model.clock_hz)

    def patterns(self, f: int):
        pat, _ = self.frames[f % len(self.frames)]
        return pat.copy()

    def _detections(self, f: int):
        from .slotting import FrameDetections

        _, d = self.frames[f % len(self.frames)]
        return FrameDetections(f, d.slots, d.masks, d.sync_ps, d.period_ps)

    def _emit(self, f: int) -> None:
        if self._sig is not None:
            self._sig.put(f)          # the "light" to Bob's process: which frame was sent
        else:
            self._q.put(self._detections(f))


def run_replay(replay: ReplayLink, cfg: NodeConfig, *, blocks: int, workdir: str | os.PathLike,
               duration_s: float = 120.0) -> dict:
    """Both nodes over ``replay`` (frames from memory): the engine's own sustained rate."""
    from drivers.qrng import OsEntropySource

    d = Path(workdir)
    rng = OsEntropySource()
    pair = LocalPair(d, "replay", cfg)
    nodes, stores, ctx = pair.nodes, pair.stores, pair.ctx
    cha, chb = pair.channels["alice"], pair.channels["bob"]
    try:
        nodes["alice"] = Node("alice", cha, stores["alice"], replay.alice, rng, cfg, ctx=ctx,
                              telemetry=None, block_limit=blocks, patterns=replay.patterns)
        nodes["bob"] = Node("bob", chb, stores["bob"], replay.bob, rng, cfg, ctx=ctx, telemetry=None,
                            frame_slots=replay.frame_slots)
        t0 = time.monotonic()
        for n in nodes.values():
            n.start()
        alice = nodes["alice"]
        while time.monotonic() - t0 < duration_s and not alice.stopped:
            if alice.blocks_done >= blocks and alice.idle() and not stores["bob"].prepared_blocks():
                break
            time.sleep(0.02)
        wall = time.monotonic() - t0
        for n in nodes.values():
            n.stop()
        res = alice.results
        secret = sum(r.secret_bits for r in res if not r.aborted)
        sent = {role: n.ch.counters["sent"] for role, n in nodes.items()}
        return {"blocks": len(res), "blocks_aborted": sum(r.aborted for r in res), "secret_bits": secret,
                "wall_s": wall, "secret_rate_wall_bps": secret / wall,
                "sifted_z_bits": sum(r.n_z for r in res),
                "latency_s": [r.latency_s for r in res],
                # from the block's last detection (Bob read its frame) to its keys in Bob's store
                "key_latency_s": sorted(nodes["bob"].key_latency_s.values()),
                "messages": sent, "messages_per_block": sum(sent.values()) / max(1, len(res)),
                "channel": {role: {k: v for k, v in n.ch.counters.items() if v} for role, n in nodes.items()},
                "recon_batches": {role: n._mux.batches_sent for role, n in nodes.items()},
                "alarms": sorted(f"{n.role}:{a['alarm']}" for n in nodes.values() for a in n.alarms),
                "keys_identical": stores_identical(stores["alice"], stores["bob"])}
    finally:
        pair.close()


def run_replay_processes(replay: ReplayLink, cfg: NodeConfig, *, blocks: int,
                         workdir: str | os.PathLike, duration_s: float = 120.0) -> dict:
    """``run_replay`` with each node in its own process, as they are deployed (``qkd alice`` /
    ``qkd bob``): two interpreters, so the nodes do not share one GIL. The processes are forked
    with the recorded frames; Alice's front end tells Bob's which frame she sent over a
    multiprocessing queue (the fiber), everything else goes over the nodes' own channel and
    stores. The wall time runs from both nodes' start to Alice having every block final."""
    import multiprocessing as mp

    import postproc_c

    d = Path(workdir)
    write_psk(d / "link.psk", "replay", 1 << 16)
    # The power-up self test's LDPC codes are built once per process (a pure function, cached;
    # ~0.35 s): build them here, before the fork, so the measured run is the engine's work and
    # not two code constructions. Each node still runs every known-answer test when it starts.
    postproc_c.selftest()
    ctx = mp.get_context("fork")
    replay._sig = ctx.Queue()
    results = ctx.Queue()
    ready = ctx.Barrier(3)
    procs = [ctx.Process(target=_replay_node, args=(role, replay, cfg, blocks, str(d), ready, results,
                                                   duration_s), name=f"replay-{role}", daemon=True)
             for role in ("alice", "bob")]
    try:
        for p in procs:
            p.start()
        ready.wait(timeout=60)
        out: dict[str, dict] = {}
        end = time.monotonic() + duration_s + 60
        while len(out) < 2 and time.monotonic() < end:
            try:
                role, res = results.get(timeout=1.0)
            except Exception:  # noqa: BLE001 - queue.Empty; a dead node is caught below
                if not all(p.is_alive() for p in procs) and results.empty():
                    break
                continue
            out[role] = res
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        replay._sig = None
    if set(out) != {"alice", "bob"}:
        raise RuntimeError(f"replay nodes did not report: got {sorted(out)}")
    a, b = out["alice"], out["bob"]
    stores = {role: KeyStore(d / f"{role}.db", "replay", key_size_bits=cfg.key_size_bits,
                             auth_refill_bytes=cfg.auth_refill_bytes) for role in ("alice", "bob")}
    try:
        identical = stores_identical(stores["alice"], stores["bob"])
    finally:
        for st in stores.values():
            st.close()
    res = a["results"]
    secret = sum(r["secret_bits"] for r in res if not r["aborted"])
    sent = {"alice": a["sent"], "bob": b["sent"]}
    return {"blocks": len(res), "blocks_aborted": sum(r["aborted"] for r in res), "secret_bits": secret,
            "wall_s": a["wall_s"], "secret_rate_wall_bps": secret / a["wall_s"],
            "sifted_z_bits": sum(r["n_z"] for r in res), "latency_s": [r["latency_s"] for r in res],
            "key_latency_s": sorted(b["key_latency_s"]), "messages": sent,
            "messages_per_block": sum(sent.values()) / max(1, len(res)),
            "cpu_s": {"alice": a["cpu_s"], "bob": b["cpu_s"]},
            "sys_s": {"alice": a["sys_s"], "bob": b["sys_s"]},
            "minflt": {"alice": a["minflt"], "bob": b["minflt"]},
            "alarms": sorted(a["alarms"] + b["alarms"]), "keys_identical": identical}


def _replay_node(role: str, replay: ReplayLink, cfg: NodeConfig, blocks: int, workdir: str, ready,
                 results, duration_s: float) -> None:
    """One node of ``run_replay_processes`` (runs in its own process)."""
    from dataclasses import asdict

    from drivers.qrng import OsEntropySource

    d = Path(workdir)
    zctx = zmq.Context()
    store = KeyStore(d / f"{role}.db", "replay", key_size_bits=cfg.key_size_bits,
                     auth_refill_bytes=cfg.auth_refill_bytes)
    pool = AuthPool(d / "link.psk", d / f"{role}.db", role)
    ch = Channel(role, pool, ctx=zctx)
    node = None
    try:
        if role == "alice":
            ch.bind(f"ipc://{d}/proto.sock", f"ipc://{d}/ctrl.sock")
            node = Node("alice", ch, store, replay.alice, OsEntropySource(), cfg, ctx=zctx, telemetry=None,
                        block_limit=blocks, patterns=replay.patterns)
        else:
            ch.connect(f"ipc://{d}/proto.sock", f"ipc://{d}/ctrl.sock")
            node = Node("bob", ch, store, replay.bob, OsEntropySource(), cfg, ctx=zctx, telemetry=None,
                        frame_slots=replay.frame_slots)
        ready.wait(timeout=60)
        t0 = time.monotonic()
        c0 = time.process_time()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        node.start()
        end = t0 + duration_s
        if role == "alice":
            while time.monotonic() < end and not node.stopped:
                if node.blocks_done >= blocks and node.idle():
                    break
                time.sleep(0.01)
            wall = time.monotonic() - t0
            try:
                ch.send(MsgType.STOP, 0, lane="ctrl")
                ch.wait_acked(2.0)
            except Exception:  # noqa: BLE001 - best effort at the end of a run
                pass
            out = {"results": [asdict(r) for r in node.results], "wall_s": wall}
        else:
            while time.monotonic() < end and not node.stopped:
                time.sleep(0.02)
            out = {"key_latency_s": list(node.key_latency_s.values())}
        node.stop()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out.update(sent=ch.counters["sent"], cpu_s=time.process_time() - c0,
                   user_s=r1.ru_utime - r0.ru_utime, sys_s=r1.ru_stime - r0.ru_stime,
                   minflt=r1.ru_minflt - r0.ru_minflt,
                   alarms=[f"{role}:{a['alarm']}" for a in node.alarms])
        results.put((role, out))
    finally:
        if node is not None:
            node.close()
        ch.close()
        pool.close()
        store.close()
        zctx.destroy(linger=0)


def _summary(nodes: dict[str, Node], stores: dict[str, KeyStore], ml, t0: float, final: bool,
             scenario: str = "") -> dict:
    alice = nodes["alice"]
    res = sorted(alice.results, key=lambda r: r.block_id)     # the latest node.RESULTS_KEPT
    ok = [r for r in res if not r.aborted]
    with alice._lock:       # totals over every block (results keeps the latest)
        c, tot = dict(alice.counters), dict(alice.totals)
    secret, n_z, emu_blocks = c["secret_bits"], tot["n_z"], tot["emulated_s"]
    wall = time.monotonic() - t0
    qber_x = [r.qber_x for r in res if not math.isnan(r.qber_x)]
    qber_z = [r.qber_z for r in ok if not math.isnan(r.qber_z)]
    fs = [r.f for r in ok if not math.isnan(r.f)]
    out = {
        "scenario": scenario,
        "secret_bits": int(secret),
        "secret_rate_bps": secret / emu_blocks if emu_blocks > 0 else 0.0,
        "secret_rate_wall_bps": secret / wall if wall > 0 else 0.0,
        "qber": (sum(qber_z) / len(qber_z)) if qber_z else (sum(qber_x) / len(qber_x) if qber_x else None),
        "qber_x": (sum(qber_x) / len(qber_x)) if qber_x else None,
        "f": (sum(fs) / len(fs)) if fs else None,
        "reconciliation": sorted({r.method for r in ok if r.method}),
        "blocks": c["blocks"],
        "blocks_aborted": c["blocks_aborted"],
        "sifted_z_bits": int(n_z),
        # Bob's events and those his dead-time guard dropped (link.slotting): the guard's cost
        "bob_events": nodes["bob"].counters["detections"],
        "dead_time_vetoed": nodes["bob"].counters["dead_time_vetoed"],
        # Bob's blocks aborted for afterpulses later than that guard (``afterpulse`` alarm)
        "afterpulse_blocks": nodes["bob"].counters["afterpulse_blocks"],
        "alarms": sorted({a["alarm"] for n in nodes.values() for a in n.alarms}),
        "alarm_count": sum(len(n.alarms) for n in nodes.values()),
        "emulated_s": ml.emulated_s,
        "wall_s": wall,
        "latency_s": max((r.latency_s for r in ok), default=None),
        # from a block's last detection (Bob read its frame) to its keys in Bob's store
        "key_latency_s": max(nodes["bob"].key_latency_s.values(), default=None),
        "messages_per_block": sum(n.ch.counters["sent"] for n in nodes.values()) / max(1, c["blocks"]),
        "keys": {role: stores[role].count() for role in stores},
        "telemetry": {role: n.telemetry_endpoint for role, n in nodes.items()},
        "channel": {role: dict(n.ch.counters) for role, n in nodes.items()},
        "auth_pool_min_left_pads": {role: n.ch.pool.min_left_pads() for role, n in nodes.items()},
    }
    if final:
        out["keys_identical"] = stores_identical(stores["alice"], stores["bob"])
        out["block_results"] = [
            {k: getattr(r, k) for k in ("block_id", "n_z", "qber_x", "qber_z", "leaked_bits", "f",
                                        "method", "secret_bits", "aborted", "reason", "latency_s",
                                        "finite_key")}
            for r in res]
    return out
