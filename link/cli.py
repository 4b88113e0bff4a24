"""The ``qkd`` command line: one entry point, one subcommand per job.

Subcommands register themselves in ``COMMANDS`` through ``command()``; each
module that owns a job (the engine, calibration, the KME) adds its parser
there, so this file stays a dispatcher. The CLI owns the terminal: library code
logs through ``logging`` and never prints.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from postproc_c._version import __version__

# name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                          Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``run(args) -> int`` as ``qkd NAME``."""
    def deco(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, add_arguments, run)
        return run
    return deco


def _no_args(_: argparse.ArgumentParser) -> None:
    pass


@command("selftest", "run the known-answer tests of every C core primitive", _no_args)
def _selftest(args: argparse.Namespace) -> int:
    import postproc_c

    report = postproc_c.selftest()
    for name, ok in report.items():
        print(f"  {name:<24} {'ok' if ok else 'FAIL'}")
    print(f"C core {postproc_c.__version__}, CPU fast paths: "
          f"{', '.join(postproc_c.cpu_features()) or 'none (portable code)'}")
    print("selftest passed")
    return 0


def _load_plugins() -> None:
    # Modules that own a subcommand register it on import. A module that is not
    # there yet (or fails to import) must not take the whole CLI down with it.
    import importlib

    for mod in ("link.commands", "link.kme_commands", "hil.commands", "calibration.commands",
                "drivers.commands", "bench.commands"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    ap = argparse.ArgumentParser(prog="qkd", description="BB84 decoy-state QKD link stack")
    ap.add_argument("--version", action="version", version=f"qkd {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0,
                    help="more log output (-v info, -vv debug)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, run) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(_run=run)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        ap.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # whoever read stdout has gone (`qkd report --run DIR | head`): stop quietly, as a
        # shell tool does; stdout goes to /dev/null so the flush at exit cannot raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141      # 128 + SIGPIPE


if __name__ == "__main__":
    # Run the registry of the importable module, not of __main__, so that
    # plugins registering on `link.cli` are seen with `python -m link.cli` too.
    from link.cli import main as _main

    sys.exit(_main())
