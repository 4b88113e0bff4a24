"""Eve's information on the final key, from what the HIL model recorded she learned.

What it is for: the attack measurement of issue #9. Both nodes run on the HIL
model with an eavesdropper (``hil.eve``) as in ``link.pipeline.run_local``; the
run is recorded (Alice's patterns, every message's public payload, the model's
``FrameResult`` with Eve's record, both key stores). Afterwards, per block,
Eve's knowledge is pushed through the same steps the nodes took:

* **Sifting**: ``postproc_c.sifting.alice_sift`` on Bob's recorded
  announcement and Alice's pattern gives the block's Z key bits and the slot of
  each; Eve's record of that slot says whether she knows the bit
  (``EveRecord.knows_bit``: she measured in Alice's basis, or holds a photon of
  the pulse) and what she got.
* **Reconciliation and verification**: every disclosed bit (``leaked_bits`` of
  the block, Cascade parities and verification tags) is given to Eve.
* **Privacy amplification**: the recorded public Toeplitz seed and length give
  the final key K = T z (``postproc_c.toeplitz_hash``); the same hash of Eve's
  best guess of z gives her best linear guess of K.

Measured per block (what is measured and what is a bound is kept apart):

* ``eve_known``: sifted key bits Eve knows (count from the model's record) and
  ``eve_known_agree``, how often her value equals Alice's bit there.
* ``sifted_agree`` / ``final_agree``: the fraction of bits on which Eve's best
  guess equals Alice's, before PA (sifted key) and after (final key), with
  ``final_sigma`` = 0.5/sqrt(ell), the standard error of a fair coin. This is
  the direct, empirical measurement; its resolution is 1/sqrt(ell), far
  coarser than eps_sec. A hash spreads Eve's few wrong bits over every output
  bit, so ``final_agree_corrected`` repeats it with the bits she knows set to
  Alice's value (the reconciliation transcript lets her correct them as it
  lets Bob): the one to read when she knows many bits.
* ``h_min_eve = (n_z - eve_known) (-log2 p_max) - leaked_bits``: a lower bound
  on Eve's min-entropy of the sifted key. Her knowledge is classical here (the
  model's attacks measure or hold single photons; Eve's record says nothing of
  the other bits), so the unknown bits count as i.i.d. with the block's own
  majority frequency p_max (not 1/2: Bob's detector efficiencies differ, so
  sifted bits are slightly biased, and Eve's best guess of an unknown bit is
  the majority value), a known bit counts as fully known, and each disclosed
  bit lowers the min-entropy by at most one
  (chain rule for min-entropy with classical side information, Renner 2005,
  Thesis Lemma 3.1.10 / Tomamichel et al., IEEE TIT 57, 5524 (2011)).
* ``pa_distance_bound = 2^{-(h_min_eve - ell)/2 - 1}``: the leftover hash lemma
  for two-universal hashing (Toeplitz, Krawczyk 1994; Tomamichel et al. 2011,
  Lemma 3 with smoothing 0) bounds the trace distance of (K, Eve) from
  (uniform, Eve) for this attack by this much. ``consistent`` says whether it
  is at most the eps_sec the block's length was computed for.
* ``allowance_bits = n_z - s0 - s1 (1 - h(phi))``: how many key bits the
  finite-key statement allows Eve to know (multi-photon events plus the
  phase-error term), recomputed from the recorded public counts with
  ``link.finite_key``; ``ell_recomputed`` must equal the node's ``ell``.

What it must not do: run inside a node (only an emulation knows Eve's record)
or log key material. Limits, stated: this measures the attacks the model
implements (classical, individual), not a coherent attack, which the
finite-key bound also covers; a zero measured advantage is consistent with,
not a proof of, eps_sec security.
"""

from __future__ import annotations

import math
import sqlite3
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import postproc_c
from postproc_c.sifting import alice_sift

from . import finite_key as fk
from .channel import Channel
from .keystore import key_rows, stores_identical
from .messages import MsgType
from .node import Node, NodeConfig, mismatch_counts, receiver_counts
from .payload import decode

_RECORDED = {MsgType.SIFT_ANNOUNCE, MsgType.SIFT_MATCH, MsgType.PE_DISCLOSE, MsgType.VERIFY_RESULT,
             MsgType.PA_SEED}


@dataclass
class Recording:
    """Everything public plus Eve's record and Alice's secrets, for the audit after the run."""

    cfg: NodeConfig
    patterns: dict = field(default_factory=dict)         # frame -> (basis, bit, intensity) copies
    frames: dict = field(default_factory=dict)           # frame -> hil.model.FrameResult
    messages: list = field(default_factory=list)         # (sender, mtype, id, meta, arrays)
    results: list = field(default_factory=list)          # Alice's BlockResult list
    alarms: list = field(default_factory=list)           # (node, alarm kind, reason)
    stored_keys: dict = field(default_factory=dict)      # block -> (auth_bytes, concatenated keys)
    keys_identical: bool | None = None
    scenario: str = ""
    wall_s: float = 0.0


@dataclass
class BlockAudit:
    block_id: int
    aborted: bool
    reason: str
    n_z: int
    ell: int
    leaked_bits: int
    eve_known: int = 0
    eve_known_agree: float = float("nan")
    unmatched_slots: int = 0
    sifted_agree: float = float("nan")
    final_agree: float = float("nan")
    final_agree_corrected: float = float("nan")
    final_sigma: float = float("nan")
    h_min_eve: int = 0
    pa_distance_bound: float = float("nan")
    eps_sec: float = float("nan")
    consistent: bool | None = None
    allowance_bits: float = float("nan")
    ell_recomputed: int | None = None
    key_matches_store: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _announced_frames(meta: dict, arrays: dict) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Bob's multi-frame SIFT_ANNOUNCE back into (frame, slots, bases) per frame.

    Layout as ``Node._announce`` writes it (the node checks it on receipt; the audit reads only
    what its own run sent): meta ``frames``, ``counts``; ``slot_gaps`` (uint16, each frame's first
    slot absolute) or ``slots``; ``bases_bits`` (one bit per slot, little-endian)."""
    frames = [int(f) for f in meta["frames"]]
    counts = [int(c) for c in meta["counts"]]
    gaps = arrays.get("slot_gaps")
    flat = arrays["slots"] if gaps is None else gaps
    bases = np.unpackbits(arrays["bases_bits"], count=flat.size, bitorder="little")
    out, pos = [], 0
    for f, c in zip(frames, counts):
        sl = flat[pos:pos + c]
        sl = np.cumsum(sl, dtype=np.uint64) if gaps is not None else sl.astype(np.uint64)
        out.append((f, sl, bases[pos:pos + c].copy()))
        pos += c
    return out


def _recording_send(ch: Channel, who: str, rec: Recording, lock: threading.Lock) -> None:
    orig = ch.send

    def send(mtype, block_id, payload=b"", lane="proto", **kw):
        if mtype in _RECORDED:
            meta, arrays = decode(bytes(payload))
            if mtype == MsgType.SIFT_ANNOUNCE:
                entries = [(f, {}, {"slots": sl, "bases": bs})
                           for f, sl, bs in _announced_frames(meta, arrays)]
            else:
                entries = [(int(block_id), meta, {k: np.array(v, copy=True) for k, v in arrays.items()})]
            with lock:
                rec.messages.extend((who, mtype, i, mt, arr) for i, mt, arr in entries)
        return orig(mtype, block_id, payload, lane=lane, **kw)

    ch.send = send  # instance attribute: the node's calls go through the recorder


def record_run(scenario, *, blocks: int = 2, config: NodeConfig | None = None, seed: int = 1,
               duration_s: float = 120.0, workdir=None) -> Recording:
    """Run both nodes on the HIL model (as ``run_local`` does) and record what the audit needs."""
    from drivers.qrng import OsEntropySource
    from hil.model import LinkModel

    from .frontend import ModelLink
    from .pipeline import LocalPair, config_for_scenario

    own_tmp = tempfile.TemporaryDirectory(prefix="qkd-audit-") if workdir is None else None
    d = Path(workdir or own_tmp.name)
    model = LinkModel(scenario, seed=seed)
    cfg = config or config_for_scenario(model.scenario)
    rec = Recording(cfg=cfg, scenario=model.scenario.name)
    lock = threading.Lock()
    link_id = f"audit-{model.scenario.name}"
    ml = ModelLink(model, keep_results=True)
    pat_rng = np.random.default_rng(seed + 1000)

    def patterns(f: int):
        n = model.frame_slots
        basis = (pat_rng.random(n) >= cfg.p_z).astype(np.uint8)
        bit = pat_rng.integers(0, 2, n, dtype=np.uint8)
        inten = pat_rng.choice(len(cfg.intensity_probs), n, p=list(cfg.intensity_probs)).astype(np.uint8)
        with lock:
            rec.patterns[f] = (basis.copy(), bit.copy(), inten.copy())
        return basis, bit, inten

    rng = OsEntropySource()
    pair = None
    t0 = time.monotonic()
    try:
        pair = LocalPair(d, link_id, cfg)
        nodes, stores, ctx = pair.nodes, pair.stores, pair.ctx
        cha, chb = pair.channels["alice"], pair.channels["bob"]
        _recording_send(cha, "alice", rec, lock)
        _recording_send(chb, "bob", rec, lock)
        nodes["alice"] = Node("alice", cha, stores["alice"], ml.alice, rng, cfg, ctx=ctx, telemetry=None,
                              block_limit=blocks, patterns=patterns)
        nodes["bob"] = Node("bob", chb, stores["bob"], ml.bob, rng, cfg, ctx=ctx, telemetry=None,
                            frame_slots=model.frame_slots)
        for n in nodes.values():
            n.start()
        alice, bob = nodes["alice"], nodes["bob"]
        while time.monotonic() - t0 < duration_s and not (alice.stopped or bob.stopped):
            if alice.blocks_done >= blocks and bob.blocks_done >= blocks and alice.idle() \
                    and not stores["bob"].prepared_blocks():
                break
            time.sleep(0.02)
        try:
            cha.send(MsgType.STOP, 0, lane="ctrl")
            cha.wait_acked(2.0)
        except Exception:  # noqa: BLE001 - best effort at the end of a run
            pass
        for n in nodes.values():
            n.stop()
        rec.wall_s = time.monotonic() - t0
        rec.results = sorted(alice.results, key=lambda r: r.block_id)
        rec.alarms = [(role, a["alarm"], a.get("reason", "")) for role, n in nodes.items() for a in n.alarms]
        rec.frames = {r.frame_index: r for r in ml.results}
        rec.keys_identical = stores_identical(stores["alice"], stores["bob"])
        for role in ("alice", "bob"):
            nodes[role].close()
        stores["alice"].close()
        with sqlite3.connect(d / "alice.db") as db:
            for bid, auth_bytes in db.execute("SELECT block_id, auth_bytes FROM block "
                                              "WHERE state IN ('committed', 'final')"):
                data = b"".join(r[3] for r in key_rows(db, int(bid)))
                rec.stored_keys[int(bid)] = (int(auth_bytes or 0), data)
        return rec
    finally:
        if pair is not None:
            pair.close()
        if own_tmp is not None:
            own_tmp.cleanup()


def _bits(words: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n]


def audit_block(rec: Recording, res) -> BlockAudit:
    """Push Eve's record for one block through sifting, reconciliation and PA (module docstring)."""
    cfg = rec.cfg
    out = BlockAudit(res.block_id, bool(res.aborted), res.reason, int(res.n_z), int(res.secret_bits),
                     int(res.leaked_bits), eps_sec=cfg.eps_sec)
    msgs = {(who, mt, i): (meta, arr) for who, mt, i, meta, arr in rec.messages}
    first, last = res.frames
    z_parts, eve_parts, know_parts, z_int_parts = [], [], [], []
    pe_meta, pe_arrays = msgs.get(("bob", MsgType.PE_DISCLOSE, res.block_id), ({}, {}))
    x_bob = (_bits(pe_arrays["x_words"], int(pe_meta["n_x"]))       # packed on the wire (protocol 4)
             if "x_words" in pe_arrays else None)
    x_alice = []
    x_int_parts = []
    for f in range(first, last + 1):
        ann = msgs.get(("bob", MsgType.SIFT_ANNOUNCE, f))
        if ann is None or f not in rec.patterns:
            continue
        slots, bases = ann[1]["slots"], ann[1]["bases"]
        basis, bit, inten = rec.patterns[f]
        s = alice_sift(slots, bases, basis, bit, inten)
        m_slots = slots[s.match.astype(bool)]
        zm = s.bases == 0
        z_slots = m_slots[zm]
        z_parts.append(s.bits[zm])
        z_int_parts.append(s.intensities[zm])
        x_alice.append(s.bits[~zm])
        x_int_parts.append(s.intensities[~zm])
        fr = rec.frames.get(f)
        know = np.zeros(z_slots.size, bool)
        eve_bit = np.zeros(z_slots.size, np.uint8)
        if fr is not None and fr.eve is not None:
            idx = np.searchsorted(fr.slots, z_slots)
            idx = np.minimum(idx, max(fr.slots.size - 1, 0))
            found = fr.slots.size > 0
            hit = (fr.slots[idx] == z_slots) if found else np.zeros(z_slots.size, bool)
            out.unmatched_slots += int((~hit).sum())
            e = fr.eve
            know[hit] = e.knows_bit[idx[hit]]
            has = hit & (e.bit[idx] != 255) if found else hit
            eve_bit[has] = e.bit[idx[has]]
        know_parts.append(know)
        eve_parts.append(eve_bit)
    z = np.concatenate(z_parts) if z_parts else np.zeros(0, np.uint8)
    know = np.concatenate(know_parts) if know_parts else np.zeros(0, bool)
    guess = np.concatenate(eve_parts) if eve_parts else np.zeros(0, np.uint8)
    if z.size != res.n_z:
        raise ValueError(f"block {res.block_id}: rebuilt {z.size} Z bits, the node had {res.n_z}")
    # Alice's sifted bits are not exactly balanced (Bob's detector efficiencies differ),
    # and Eve knows the model: on bits she does not know she guesses the majority value
    majority = np.uint8(2 * int(z.sum()) > z.size)
    guess = np.where(know, guess, majority).astype(np.uint8)
    out.eve_known = int(know.sum())
    if out.eve_known:
        out.eve_known_agree = float((guess[know] == z[know]).mean())
    if z.size:
        out.sifted_agree = float((guess == z).mean())
    # unknown bits: i.i.d. with P(majority) = p_max, min-entropy -log2 p_max each
    unknown = z[~know]
    p_max = max(float(unknown.mean()), 1.0 - float(unknown.mean())) if unknown.size else 1.0
    out.h_min_eve = int(math.floor(unknown.size * -math.log2(p_max))) - int(res.leaked_bits)
    # the finite-key length again, from the recorded public counts (as Alice computed it)
    vr = msgs.get(("bob", MsgType.VERIFY_RESULT, res.block_id))
    if x_bob is not None and vr is not None and "z_errors" in vr[0]:
        xa = np.concatenate(x_alice)
        xi = np.concatenate(x_int_parts)
        zi = np.concatenate(z_int_parts)
        k = len(cfg.intensities)
        x_n = [int((xi == j).sum()) for j in range(k)]
        x_err = [int(((xa != x_bob) & (xi == j)).sum()) for j in range(k)]
        z_n = tuple(int((zi == j).sum()) for j in range(k))
        fkr = fk.secret_key_length(fk.BasisCounts(z_n, tuple(int(v) for v in vr[0]["z_errors"])),
                                   fk.BasisCounts(tuple(x_n), tuple(x_err)),
                                   fk.DecoySettings(tuple(cfg.intensities), tuple(cfg.intensity_probs)),
                                   leak_ec_bits=int(res.leaked_bits), eps_sec=cfg.eps_sec,
                                   eps_cor=cfg.eps_cor, protocol=cfg.finite_key,
                                   receiver=receiver_counts(cfg, pe_meta),
                                   mismatch=mismatch_counts(cfg, pe_meta))
        out.ell_recomputed = int(fkr.ell)
        out.allowance_bits = float(z.size - fkr.s0 - fkr.s1 * (1.0 - fk.binary_entropy(fkr.phase_error)))
    pa = msgs.get(("alice", MsgType.PA_SEED, res.block_id))
    if res.aborted or pa is None or "seed" not in pa[1]:
        return out
    ell, seed = int(pa[0]["ell"]), pa[1]["seed"]
    key = postproc_c.toeplitz_hash(postproc_c.pack_bits(z), z.size, seed, ell)
    kev = postproc_c.toeplitz_hash(postproc_c.pack_bits(guess), z.size, seed, ell)
    out.final_agree = float((_bits(key, ell) == _bits(kev, ell)).mean())
    # the same with Eve's few errors on the bits she knows corrected: the public
    # reconciliation transcript lets her fix them as it lets Bob fix his
    fixed = np.where(know, z, guess).astype(np.uint8)
    kfx = postproc_c.toeplitz_hash(postproc_c.pack_bits(fixed), z.size, seed, ell)
    out.final_agree_corrected = float((_bits(key, ell) == _bits(kfx, ell)).mean())
    fixed[:] = 0
    out.final_sigma = 0.5 / math.sqrt(ell)
    margin = out.h_min_eve - ell
    out.pa_distance_bound = 2.0 ** (-margin / 2.0 - 1.0) if margin > -2000 else 1.0
    out.consistent = bool(out.pa_distance_bound <= cfg.eps_sec)
    stored = rec.stored_keys.get(res.block_id)
    if stored is not None:
        auth_bytes, data = stored
        kb = key.view(np.uint8).tobytes()
        out.key_matches_store = kb[auth_bytes:auth_bytes + len(data)] == data
    key[:] = 0
    return out


def audit(rec: Recording) -> list[BlockAudit]:
    return [audit_block(rec, r) for r in rec.results]
