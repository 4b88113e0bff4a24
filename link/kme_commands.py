"""Operations commands: `qkd pki` (lab CA, KME and SAE certificates), `qkd kme`, `qkd report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import command


def _pki_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("pki"), help="folder to write into (default ./pki)")
    p.add_argument("--kme", action="append", default=[], metavar="ID",
                   help="a KME ID to issue a server certificate for (repeatable)")
    p.add_argument("--sae", action="append", default=[], metavar="ID",
                   help="an SAE ID to issue a client certificate for (repeatable)")
    p.add_argument("--host", action="append", default=[],
                   help="extra host name or IP for the KME certificates (repeatable)")


@command("pki", "create a lab CA with KME (server) and SAE (client) certificates", _pki_args)
def _pki(args: argparse.Namespace) -> int:
    from .pki import create_lab_pki

    kmes = args.kme or ["kme-alice", "kme-bob"]
    saes = args.sae or ["sae-alice", "sae-bob"]
    if (args.out / "ca.key").exists():
        print(f"{args.out}/ca.key exists: refusing to overwrite a CA (choose another --out)", file=sys.stderr)
        return 2
    try:
        issued = create_lab_pki(args.out, kmes, saes, tuple(args.host))
    except OSError as exc:             # --out not creatable (a file there, no permission, no parent)
        print(f"qkd pki: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for name, paths in issued.items():
        print(f"  {name:<16} {paths.cert}  {paths.key}")
    return 0


def _kme_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="the node file (TOML, see link/config.py) with a [kme] table")
    p.add_argument("--duration", type=float, default=0.0, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")


@command("kme", "serve ETSI GS QKD 014 key delivery from a node's key store (standalone KME)", _kme_args)
def _kme(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .config import ConfigError, load_node_file
    from .keystore import KeyStore, KeyStoreError
    from .services import start_kme

    try:
        nf = load_node_file(args.config)
        if nf.kme is None:
            raise ConfigError(args.config, "[kme]", "missing table (qkd kme needs it)")
    except ConfigError as exc:
        print(f"qkd kme: {exc}", file=sys.stderr)
        return 2
    s = nf.kme
    try:
        store = KeyStore(nf.store, nf.link_id, key_size_bits=nf.protocol.key_size_bits)
    except (KeyStoreError, OSError, ValueError) as exc:
        print(f"qkd kme: {nf.store}: {exc}", file=sys.stderr)
        return 2
    try:
        handle = start_kme(s, store, nf.role)
    except (OSError, ValueError, KeyStoreError) as exc:  # port in use, certificates, stores
        store.close()
        print(f"qkd kme: cannot start the KME on {s.host}:{s.port}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    old = signal.signal(signal.SIGINT, lambda *a: stop.set())
    old_term = signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        peer = s.peer_url or "none (no peer_url: this KME answers dec_keys only; enc_keys gets 503)"
        print(f"qkd kme: {s.kme_id} for link {nf.link_id} at {handle.url} (SAEs "
              f"{', '.join(sorted(s.saes))}; peer KME {s.peer_kme_id} at {peer}; "
              f"{store.available()} keys in {nf.store})", flush=True)
        import time
        end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
        while not stop.wait(0.2) and time.monotonic() < end:
            pass
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
        st = handle.kme.stats
        handle.close()
        store.close()
        print(f"qkd kme: stopped; keys delivered: enc_keys {st.keys_served_enc}, dec_keys "
              f"{st.keys_served_dec}", flush=True)
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path, metavar="DIR",
                   help="the folder `qkd run --out DIR` wrote (summary.json, telemetry.jsonl, stores)")
    p.add_argument("--html", action="store_true",
                   help="one self-contained HTML page with inline SVG charts instead of Markdown")
    p.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                   help="write the report here (default: print it)")


@command("report", "summarize a run folder: rates, QBER, f, epsilon budget, alarms, key counts", _report_args)
def _report(args: argparse.Namespace) -> int:
    from .report import ReportError, load_run, render_html, render_markdown

    try:
        run = load_run(args.run)
        text = render_html(run) if args.html else render_markdown(run)
    except ReportError as exc:
        print(f"qkd report: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        print(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:       # no such folder, no permission, disk full
            print(f"qkd report: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"qkd report: wrote {args.output}")
    return 0
