"""``clipaudit`` command line: ``main(argv)``; one module ``cmd_<name>.py`` per subcommand.

A subcommand module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; it is
found automatically, so adding a subcommand touches no shared file. User errors
(:class:`analysis.ClipauditError`) are printed as one line, without a traceback, with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from .._checks import ClipauditError

__all__ = ["main", "build_parser"]

_ORDER = ["audit", "zeroshot", "retrieval", "confidence", "hierarchy", "concepts", "train", "report",
          "reproduce", "models", "datasets", "prompts", "wordnet", "cache"]


def _commands() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cmd_"):
            mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    rank = {n: i for i, n in enumerate(_ORDER)}
    return sorted(mods, key=lambda m: (rank.get(m.NAME, len(rank)), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipaudit",
        description="Audit and explain the zero-shot behaviour of CLIP-style models.",
        epilog="Run `clipaudit COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"clipaudit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except ClipauditError as err:
        print(f"clipaudit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clipaudit {args.command}: interrupted; completed chunks are cached, re-run to resume.",
              file=sys.stderr)
        return 130
