"""``qkd pki``: a lab certificate authority with KME and SAE certificates."""

from __future__ import annotations

import argparse
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
        print(f"{args.out}/ca.key exists: refusing to overwrite a CA (choose another --out)")
        return 2
    issued = create_lab_pki(args.out, kmes, saes, tuple(args.host))
    for name, paths in issued.items():
        print(f"  {name:<16} {paths.cert}  {paths.key}")
    return 0
