"""``clipaudit`` command line: ``main(argv)``.

Two kinds of subcommand, both found automatically (adding one touches no shared file):

- one per registered task (``clipaudit zeroshot``, ``confidence``, ...), generated from the task registry
  (:mod:`analysis.tasks`) by :mod:`analysis.cli._tasks`;
- one module ``cmd_<name>.py`` per other command (``audit``, ``train``, ``report``...), defining ``NAME``,
  ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

User errors (:class:`analysis.ClipauditError`) are printed as one line, without a traceback, with exit
code 2. Building the parser imports no torch, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .. import __version__
from .._checks import ClipauditError
from ._tasks import add_task_commands

__all__ = ["main", "build_parser"]

def _commands() -> list[ModuleType]:
    """The ``cmd_*`` modules, ``audit`` first (each may set ``ORDER``; default 100)."""
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cmd_"):
            mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipaudit",
        description="Audit and explain the zero-shot behaviour of CLIP-style models.",
        epilog="Run `clipaudit COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"clipaudit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    mods = _commands()
    for mod in mods:
        if getattr(mod, "ORDER", 100) < 10:  # the audit, before the single tasks
            _add_module(sub, mod)
    add_task_commands(sub)
    for mod in mods:
        if getattr(mod, "ORDER", 100) >= 10:
            _add_module(sub, mod)
    return parser


def _add_module(sub: Any, mod: ModuleType) -> None:
    p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(p)
    p.set_defaults(_run=mod.run)


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
