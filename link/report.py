"""``qkd report --run DIR``: a run's folder summarized for a person (Markdown or HTML).

What it is for: read back what ``qkd run --out DIR`` leaves (``summary.json``,
``telemetry.jsonl``, the key stores ``alice.db``/``bob.db`` and, with
``--kme``, the KMEs' reservation stores) and write a report: rates, QBER, the
reconciliation efficiency f, the epsilon budget per block and in total,
alarms on the timeline, key counts and what the KMEs delivered. Markdown is
the default (readable as plain text, in a terminal or a ticket); ``--html``
writes one self-contained page whose charts are inline SVG (no script, no
external file, no plotting library).

Epsilon budget. Each block's key is eps-secure with the budget the engine
published for it (``eps`` in the block telemetry: parameter estimation,
privacy amplification, correctness, authentication; Lim et al., PRA 89,
022307 (2014), Eq. 1 and the composition of Appendix B, Eq. B4). Keys of different
blocks compose by adding their epsilons (Portmann and Renner, RMP 94, 025008
(2022), composition theorem), so the report gives the largest per-block total
and the sum over the blocks that produced key.

What it must not do: write anywhere but the report's own output, open the
stores other than read-only, or show key material (only counts and IDs' sets).
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .dashboard import sparkline
from .keystore import key_rows

T = TypeVar("T")


class ReportError(ValueError):
    """The run folder cannot be reported on; the message names the file and the problem."""


@dataclass
class StoreInfo:
    path: Path
    keys: int
    key_ids: frozenset[str]
    blocks: dict[str, int]           # state -> count


@dataclass
class Run:
    folder: Path
    summary: dict | None
    events: list[dict]
    stores: dict[str, StoreInfo] = field(default_factory=dict)
    reservations: dict[str, int] = field(default_factory=dict)

    @property
    def t0(self) -> float:
        return min((e["t"] for e in self.events if isinstance(e.get("t"), int | float)), default=0.0)

    def kind(self, kind: str, node: str | None = None) -> list[dict]:
        return [e for e in self.events if e.get("kind") == kind and (node is None or e.get("node") == node)]

    def blocks(self) -> list[dict]:
        """Alice's block objects (she estimates QBER and f; Bob's carry no estimate)."""
        return sorted(self.kind("block", "alice"), key=lambda e: e.get("block_id", 0))


def _ro_uri(path: Path, mode: str) -> str:
    return f"file:{urllib.parse.quote(str(path.resolve()))}?{mode}"


def _read_store(path: Path, read: Callable[[sqlite3.Connection], T]) -> T:
    """``read(conn)`` on the SQLite file ``path``, leaving nothing behind beside it.

    A store is in WAL mode, and SQLite opening it with ``mode=ro`` creates ``-wal`` and
    ``-shm`` files that a read-only connection cannot remove on close (the files that
    were left beside a run's stores). So: when the file has no ``-wal`` beside it, no
    connection has it open (a WAL-mode connection keeps its ``-wal`` while open) and
    the file holds every commit, so it is read with ``immutable=1``: no locks, no
    files created. A writer could open it while we read; the read is then checked and
    done again through the WAL if a ``-wal`` appeared or the file changed. When a
    ``-wal`` is there (a node running, or one killed), only ``mode=ro`` sees its
    commits: it reads through the WAL and may add a ``-shm`` (the writer's files).
    """
    wal = path.with_name(path.name + "-wal")

    def stamp():
        st = path.stat()
        return st.st_size, st.st_mtime_ns, wal.exists()

    before = stamp()
    if not before[2]:
        with contextlib.closing(sqlite3.connect(_ro_uri(path, "immutable=1"), uri=True)) as db:
            out = read(db)
        if stamp() == before:
            return out
    with contextlib.closing(sqlite3.connect(_ro_uri(path, "mode=ro"), uri=True)) as db:
        return read(db)


def load_run(folder: str | Path) -> Run:
    d = Path(folder)
    if not d.is_dir():
        raise ReportError(f"{d}: not a folder (give the --out folder of `qkd run`)")
    summary = None
    sp = d / "summary.json"
    if sp.exists():
        try:
            summary = json.loads(sp.read_text())
        except ValueError as exc:
            raise ReportError(f"{sp}: not valid JSON: {exc}") from None
        if not isinstance(summary, dict):
            raise ReportError(f"{sp}: expected a JSON object")
    events: list[dict] = []
    tp = d / "telemetry.jsonl"
    if tp.exists():
        for n, line in enumerate(tp.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
            except ValueError as exc:
                raise ReportError(f"{tp}:{n}: not a JSON object: {exc}") from None
            if not isinstance(e, dict):
                raise ReportError(f"{tp}:{n}: not a JSON object")
            events.append(e)
    if summary is None and not events:
        raise ReportError(f"{d}: neither summary.json nor telemetry.jsonl (was it written by "
                          f"`qkd run --out {d}`?)")
    run = Run(d, summary, events)
    for role in ("alice", "bob"):
        p = d / f"{role}.db"
        if p.exists():
            def read_keys(db: sqlite3.Connection) -> tuple[frozenset[str], dict[str, int]]:
                ids = frozenset(r[0] for r in key_rows(db))
                return ids, dict(db.execute("SELECT state, COUNT(*) FROM block GROUP BY state").fetchall())
            try:
                ids, blocks = _read_store(p, read_keys)
            except sqlite3.Error as exc:
                raise ReportError(f"{p}: not a key store: {exc}") from None
            run.stores[role] = StoreInfo(p, len(ids), ids, blocks)
        r = d / f"{role}-kme.db"
        if r.exists():
            try:
                run.reservations[role] = _read_store(
                    r, lambda db: db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])
            except sqlite3.Error as exc:
                raise ReportError(f"{r}: not a KME reservation store: {exc}") from None
    return run


# -- figures -------------------------------------------------------------------------------------

def _finite(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _rate(bps: float | None) -> str:
    if bps is None:
        return "-"
    for unit, scale in (("Mb/s", 1e6), ("kb/s", 1e3)):
        if abs(bps) >= scale:
            return f"{bps / scale:.2f} {unit}"
    return f"{bps:.0f} b/s"


def _fmt(v, spec: str) -> str:
    f = _finite(v)
    return "-" if f is None else format(f, spec)


def figures(run: Run) -> dict:
    """The numbers of the report, from the summary where it has them, else from the telemetry."""
    s = run.summary or {}
    blocks = run.blocks()
    ok = [b for b in blocks if not b.get("aborted")]
    eps_totals = [_finite((b.get("eps") or {}).get("total")) for b in ok]
    eps_totals = [e for e in eps_totals if e is not None]
    # the authentication term (Wegman-Carter forgery bound of the block's tags) is not part of
    # the eps_sec + eps_cor the finite-key length was computed for: shown beside it
    eps_auth = [_finite((b.get("eps") or {}).get("authentication")) or 0.0 for b in ok if b.get("eps")]
    # key over time from Alice's block objects (the status objects are periodic and miss a
    # block that ends the run); the rate of each block is its key over the wall-clock time
    # since the block before it finished
    secret_series, rates, cum, t_prev = [(0.0, 0)], [], 0, 0.0
    for b in blocks:
        t = float(b.get("t", run.t0)) - run.t0
        bits = 0 if b.get("aborted") else int(b.get("secret_bits", 0))
        cum += bits
        secret_series.append((t, cum))
        if t > t_prev:
            rates.append((t, bits / (t - t_prev)))
        t_prev = max(t, t_prev)
    alarms = sorted(run.kind("alarm"), key=lambda e: e.get("t", 0))
    kme = {"enc_keys": 0, "dec_keys": 0}
    for e in run.kind("kme"):
        for call in kme:
            if isinstance(e.get(call), int):
                kme[call] += e[call]
    cfg = s.get("config", {})
    qx = [_finite(b.get("qber_x")) for b in blocks]
    fs = [_finite(b.get("f")) for b in ok]
    return {
        "scenario": s.get("scenario") or cfg.get("scenario") or "unknown",
        "blocks": s.get("blocks", len(blocks)),
        "blocks_aborted": s.get("blocks_aborted", sum(bool(b.get("aborted")) for b in blocks)),
        "abort_reasons": sorted({b.get("reason", "") for b in blocks if b.get("aborted")} - {""}),
        "secret_bits": s.get("secret_bits", sum(int(b.get("secret_bits", 0)) for b in ok)),
        "secret_rate_bps": _finite(s.get("secret_rate_bps")),
        "secret_rate_wall_bps": _finite(s.get("secret_rate_wall_bps")),
        "qber": _finite(s.get("qber")),
        "qber_x": _finite(s.get("qber_x")) if "qber_x" in s else _mean(qx),
        "qber_x_range": (min(q for q in qx if q is not None), max(q for q in qx if q is not None))
        if any(q is not None for q in qx) else None,
        "f": _finite(s.get("f")) if "f" in s else _mean(fs),
        "eps_target": (cfg.get("eps_sec"), cfg.get("eps_cor")),
        "eps_block_max": max(eps_totals) if eps_totals else None,
        "eps_auth_max": max(eps_auth) if eps_auth else None,
        "eps_sum": sum(eps_totals) if eps_totals else None,
        "emulated_s": _finite(s.get("emulated_s")),
        "wall_s": _finite(s.get("wall_s")),
        "keys_identical": s.get("keys_identical"),
        "alarms": alarms,
        "kme": kme,
        "rates": rates,
        "secret_series": secret_series,
        "blocks_list": blocks,
        "config": cfg,
        "channel": s.get("channel", {}),
    }


def _mean(xs) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


# -- Markdown -----------------------------------------------------------------------------------

def render_markdown(run: Run) -> str:
    f = figures(run)
    cfg = f["config"]
    out = [f"# QKD run report: {run.folder.name}", ""]
    if run.summary is None:   # `qkd run` writes summary.json at its end: reported while it runs
        out += ["**No summary.json: the run is still going, or stopped before its end.** The figures "
                "below are from its telemetry and stores so far; the scenario, the rates and the "
                "end-of-run key comparison are in summary.json only.", ""]
    out.append(f"Scenario **{f['scenario']}**"
               + (f", {cfg.get('blocks')} blocks requested of {cfg.get('block_bits')} Z bits, "
                  f"{cfg.get('finite_key')} finite-key bound, {cfg.get('reconciliation')} reconciliation, "
                  f"{cfg.get('instruments')} instruments, seed {cfg.get('seed')}" if cfg else "")
               + ".")
    out += ["", "## Key", "", "| quantity | value |", "|---|---|"]
    rows = [
        ("blocks", f"{f['blocks']} ({f['blocks_aborted']} aborted"
                   + (f": {', '.join(f['abort_reasons'])}" if f["abort_reasons"] else "") + ")"),
        ("secret key", f"{f['secret_bits']} bits"),
        ("secret rate (emulated time)", _rate(f["secret_rate_bps"])),
        ("secret rate (wall clock)", _rate(f["secret_rate_wall_bps"])),
        ("QBER (Z, corrected)", _fmt(f["qber"], ".4f")),
        ("QBER_X (estimate)", _fmt(f["qber_x"], ".4f") + (
            " (blocks {:.4f} .. {:.4f})".format(*f["qber_x_range"]) if f["qber_x_range"] else "")),
        ("reconciliation efficiency f", _fmt(f["f"], ".3f")),
        ("time", f"{_fmt(f['emulated_s'], '.3f')} s emulated, {_fmt(f['wall_s'], '.1f')} s wall clock"),
    ]
    for role, st in sorted(run.stores.items()):
        states = ", ".join(f"{n} {s}" for s, n in sorted(st.blocks.items()))
        rows.append((f"keys in {role}'s store", f"{st.keys} ({states} blocks)"))
    if len(run.stores) == 2:
        same = run.stores["alice"].key_ids == run.stores["bob"].key_ids
        rows.append(("same key IDs in both stores", "yes" if same else "NO"))
    if f["keys_identical"] is not None:
        rows.append(("keys identical at the end of the run", "yes" if f["keys_identical"] else "NO"))
    out += [f"| {k} | {v} |" for k, v in rows]

    eps_sec, eps_cor = f["eps_target"]
    out += ["", "## Epsilon budget", ""]
    if f["eps_block_max"] is None:
        out.append("No block produced key: no budget spent.")
    else:
        tgt = (eps_sec or 0) + (eps_cor or 0)
        auth = f.get("eps_auth_max") or 0.0
        within = f["eps_block_max"] <= (tgt + auth) * (1 + 1e-9) if tgt else None
        out.append(f"Largest per-block total {f['eps_block_max']:.3g}"
                   + (f" against eps_sec + eps_cor = {tgt:.3g} plus authentication up to {auth:.3g} "
                      f"({'within' if within else 'EXCEEDED'})" if tgt else "")
                   + f"; composed over the {len([b for b in f['blocks_list'] if not b.get('aborted')])} "
                     f"blocks with key: {f['eps_sum']:.3g}.")

    blocks = f["blocks_list"]
    if blocks:
        t0 = run.t0
        q_line = sparkline([_finite(b.get("qber_x")) for b in blocks], 60, lo=0)
        k_line = sparkline([0 if b.get("aborted") else b.get("secret_bits", 0) for b in blocks], 60, lo=0)
        out += ["", "## Blocks", "", f"QBER_X per block `{q_line}`  ", f"key per block `{k_line}`", "",
                "| block | t (s) | n_Z | QBER_X | QBER_Z | f | leaked | secret bits | eps total "
                "| latency (s) | result |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for b in blocks:
            eps = (b.get("eps") or {}).get("total")
            out.append(f"| {b.get('block_id')} | {b.get('t', t0) - t0:.1f} | {b.get('n_z', 0)} | "
                       f"{_fmt(b.get('qber_x'), '.4f')} | {_fmt(b.get('qber_z'), '.4f')} | "
                       f"{_fmt(b.get('f'), '.3f')} | {b.get('leaked_bits', 0)} | {b.get('secret_bits', 0)} | "
                       f"{_fmt(eps, '.3g')} | {_fmt(b.get('latency_s'), '.2f')} | "
                       f"{'ABORTED: ' + b.get('reason', '') if b.get('aborted') else 'key'} |")
        fk_rows = [b for b in blocks if b.get("finite_key")]
        if fk_rows:
            out += ["", "## Finite-key terms (Alice; link/finite_key.py)", "",
                    "s0, s1: vacuum and single-photon events of the key basis (lower bounds; s1 without "
                    "the events Bob received as two or more photons, bounded from his cross clicks for "
                    "a passive receiver: multi-photon Z/X, and the events a detector efficiency "
                    "mismatch down to detector_efficiency_ratio_min could have come from: tagged Z/X); "
                    "phase error: its upper bound.", "",
                    "| block | s0 | s1 | s1 test | v1 test | phase error | multi-photon Z | multi-photon X "
                    "| tagged Z | tagged X |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for b in fk_rows:
                t = b["finite_key"]
                cells = [_fmt(t.get(k), ".4f" if k == "phase_error" else ".0f")
                         for k in ("s0", "s1", "s1_test", "v1_test", "phase_error", "multiphoton_z",
                                   "multiphoton_x", "tagged_z", "tagged_x")]
                out.append(f"| {b.get('block_id')} | " + " | ".join(cells) + " |")
    if f["rates"]:
        vals = [r for _, r in f["rates"]]
        t_last = f["rates"][-1][0]
        out += ["", "## Rate over time (wall clock, per block: its key over the time since the previous)",
                "", f"`{sparkline(vals, 60, lo=0)}` peak {_rate(max(vals))}, overall "
                f"{_rate(f['secret_series'][-1][1] / t_last)} over {t_last:.1f} s"]

    out += ["", "## Alarms", ""]
    if not f["alarms"]:
        out.append("None.")
    else:
        for a in f["alarms"]:
            out.append(f"- t = {a.get('t', run.t0) - run.t0:.1f} s, {a.get('node', '?')}: "
                       f"**{a.get('alarm', '?')}** {a.get('reason', '')}"
                       + (f" (block {a['block_id']})" if a.get("block_id") is not None else ""))
    ch = f["channel"]
    if ch:
        bad = {r: {k: v for k, v in c.items() if k in ("bad_tag", "replayed", "out_of_sequence", "malformed",
                                                        "wrong_sender") and v} for r, c in ch.items()}
        out += ["", "## Classical channel", ""]
        for r, c in sorted(ch.items()):
            out.append(f"- {r}: {c.get('sent', 0)} sent, {c.get('retransmitted', 0)} retransmitted, "
                       f"{c.get('received', 0)} received; refused: "
                       + (", ".join(f"{k} {v}" for k, v in bad[r].items()) or "none"))
    if f["kme"]["enc_keys"] or f["kme"]["dec_keys"] or run.reservations:
        out += ["", "## Key delivery (ETSI GS QKD 014)", "",
                f"Keys delivered: enc_keys {f['kme']['enc_keys']}, dec_keys {f['kme']['dec_keys']}."]
        for role, n in sorted(run.reservations.items()):
            out.append(f"Reserved at {role}'s KME, not yet fetched by its slave SAE: {n}.")
    out += ["", f"_Written {time.strftime('%Y-%m-%d %H:%M:%S')} by `qkd report` from {run.folder}._", ""]
    return "\n".join(out)


# -- HTML with inline SVG -----------------------------------------------------------------------------

def _svg_chart(title: str, series: list[tuple[float, float]], marks: list[tuple[float, str]],
               t_end: float, unit: str, w: int = 640, h: int = 160) -> str:
    pad_l, pad_b, pad_t = 60, 22, 20
    pw, ph = w - pad_l - 10, h - pad_b - pad_t
    pts = [(t, v) for t, v in series if _finite(v) is not None]
    vmax = max((v for _, v in pts), default=0.0) or 1.0
    t_end = t_end or max((t for t, _ in pts), default=1.0) or 1.0

    def x(t):
        return pad_l + pw * min(max(t / t_end, 0), 1)

    def y(v):
        return pad_t + ph * (1 - v / vmax)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="{pad_l}" y="14" font-size="12">{html.escape(title)}</text>',
             f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" stroke="#888"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" stroke="#888"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 4}" font-size="10" text-anchor="end">{vmax:.3g}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + ph}" font-size="10" text-anchor="end">0</text>',
             f'<text x="{pad_l + pw}" y="{h - 4}" font-size="10" text-anchor="end">{t_end:.1f} s</text>',
             f'<text x="4" y="{pad_t + ph / 2}" font-size="10">{html.escape(unit)}</text>']
    for t, label in marks:
        parts.append(f'<line x1="{x(t):.1f}" y1="{pad_t}" x2="{x(t):.1f}" y2="{pad_t + ph}" stroke="#d00" '
                     f'stroke-dasharray="3,2"><title>{html.escape(label)}</title></line>')
    if len(pts) > 1:
        parts.append('<polyline fill="none" stroke="#036" stroke-width="1.5" points="'
                     + " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts) + '"/>')
    for t, v in pts if len(pts) <= 60 else []:
        parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="#036"/>')
    parts.append("</svg>")
    return "".join(parts)


def _md_table_to_html(lines: list[str]) -> str:
    rows = [ln.strip().strip("|").split("|") for ln in lines if not set(ln.strip()) <= set("|-:")]
    head, body = rows[0], rows[1:]
    cells = lambda r, tag: "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in r)  # noqa: E731
    return ("<table><tr>" + cells(head, "th") + "</tr>"
            + "".join("<tr>" + cells(r, "td") + "</tr>" for r in body) + "</table>")


def _md_inline(text: str) -> str:
    """A Markdown line's text as HTML: escaped, ``**bold**`` and ```code``` marks dropped."""
    return html.escape(text.strip()).replace("**", "").replace("`", "")


def render_html(run: Run) -> str:
    """One self-contained page: the Markdown's content plus SVG charts over time, alarms marked."""
    f = figures(run)
    t0 = run.t0
    t_end = max((e.get("t", t0) - t0 for e in run.events), default=0.0)
    marks = [(a.get("t", t0) - t0, f"{a.get('node')}: {a.get('alarm')} {a.get('reason', '')}")
             for a in f["alarms"]]
    blocks = f["blocks_list"]
    charts = [
        _svg_chart("QBER_X per block", [(b.get("t", t0) - t0, _finite(b.get("qber_x"))) for b in blocks],
                   marks, t_end, "QBER"),
        _svg_chart("secret key produced (Alice, cumulative)", f["secret_series"], marks, t_end, "bits"),
        _svg_chart("secret key rate per block (wall clock)", f["rates"], marks, t_end, "bit/s"),
    ]
    # body: the Markdown, converted line by line (headings, tables, lists, paragraphs)
    md = render_markdown(run).splitlines()
    body, i = [], 0
    while i < len(md):
        ln = md[i]
        if ln.startswith("|"):
            j = i
            while j < len(md) and md[j].startswith("|"):
                j += 1
            body.append(_md_table_to_html(md[i:j]))
            i = j
            continue
        if ln.startswith("## "):
            body.append(f"<h2>{html.escape(ln[3:])}</h2>")
            if ln == "## Alarms":
                body.append("<p>Dashed red lines on the charts mark the alarms.</p>")
        elif ln.startswith("# "):
            body.append(f"<h1>{html.escape(ln[2:])}</h1>")
            body.append("<div>" + "<br>".join(charts) + "</div>")
        elif ln.startswith("- "):
            j = i
            while j < len(md) and md[j].startswith("- "):
                j += 1
            body.append("<ul>" + "".join(f"<li>{_md_inline(x[2:])}</li>" for x in md[i:j]) + "</ul>")
            i = j
            continue
        elif ln.startswith("_") and ln.rstrip().endswith("_"):
            body.append(f"<p><em>{_md_inline(ln.strip()[1:-1])}</em></p>")
        elif ln.strip():
            body.append(f"<p>{_md_inline(ln)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>QKD run report "
            f"{html.escape(run.folder.name)}</title><style>{style}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
