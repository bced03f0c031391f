"""``clipaudit cache``: what the embedding cache holds, whether it is intact, and removing leftovers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAME = "cache"
ORDER = 90
HELP = "embedding cache: info (size, entries), verify (checksums), clean (temporary files of killed runs)"
DESCRIPTION = """\
The embedding cache (--cache-dir, default $CLIPAUDIT_CACHE or ~/.cache/clipaudit) holds one folder per
entry, <namespace>/<key>/ (namespace = image, text, patch-tokens, ...). Each entry records its key and a
SHA-256 checksum of its arrays; a run that finds a corrupt entry reports it, deletes it and computes it
again. Several runs may use one cache at once (per-entry file locks).

  info    the folder, its size, entries per namespace (complete, partial), stale temporary files
  verify  check every entry's key and checksums; exit status 1 if any is corrupt (--fix deletes them,
          so the next run computes them again)
  clean   remove temporary files left by killed runs; --old also removes entries of an older cache
          format (never read again); --all removes every entry (run it when no other clipaudit process
          uses the cache)

examples:
  clipaudit cache info
  clipaudit cache info --cache-dir ./cache --json
  clipaudit cache verify --cache-dir ./cache
  clipaudit cache verify --fix
  clipaudit cache clean
  clipaudit cache clean --all --cache-dir ./cache
"""

_CACHE_DIR_HELP = "cache folder (default: $CLIPAUDIT_CACHE or ~/.cache/clipaudit)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="size, entries per namespace and stale temporary files",
                          description="Show the cache folder, its size, its entries per namespace (complete or "
                                      "partial) and the temporary files left by killed runs.")
    info.add_argument("--json", action="store_true", help="print JSON")
    verify = sub.add_parser("verify", help="check every entry's key and checksums (exit 1 if one is corrupt)",
                            description="Check the key and the SHA-256 checksums of every entry. Exit status 1 "
                                        "if any is corrupt (also with --fix, after deleting it).")
    verify.add_argument("--fix", action="store_true",
                        help="delete the corrupt entries (or chunks); the next run computes them again")
    clean = sub.add_parser("clean", help="remove temporary files of killed runs (--all: every entry)",
                           description="Remove the temporary files left by killed runs (those whose process "
                                       "is gone, or older than a day) and print what was removed.")
    what = clean.add_mutually_exclusive_group()
    what.add_argument("--old", action="store_true", help="also remove entries of an older cache format")
    what.add_argument("--all", action="store_true", dest="everything",
                      help="remove every entry (not while another clipaudit process uses the cache)")
    for p in (info, verify, clean):
        p.add_argument("--cache-dir", default=None, help=_CACHE_DIR_HELP)


def _root(args: argparse.Namespace) -> Path:
    from ..cache.admin import check_cache_root
    from ..resources import default_cache_dir

    return check_cache_root(Path(args.cache_dir) if args.cache_dir is not None else default_cache_dir())


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _info(root: Path, as_json: bool) -> int:
    from ..cache.admin import human_size, summarize_cache

    summary = summarize_cache(root)
    table = summary.by_namespace()
    if as_json:
        out: dict[str, Any] = {"root": str(root), "exists": root.is_dir(), "size": summary.size,
                               "namespaces": table,
                               "stale_temps": [{"path": _rel(p, root), "size": s} for p, s in summary.temps]}
        print(json.dumps(out, indent=2))
        return 0
    if not root.is_dir():
        print(f"cache folder {root} does not exist yet (it is created by the first run that caches something)")
        return 0
    print(f"cache folder {root}: {human_size(summary.size)}")
    if table:
        print(f"  {'namespace':<16}{'entries':>8}{'complete':>10}{'partial':>9}{'other':>7}{'size':>11}")
        for ns, row in table.items():
            other = row.get("old-format", 0) + row.get("corrupt", 0) + row.get("busy", 0)
            print(f"  {ns:<16}{row['entries']:>8}{row.get('complete', 0):>10}{row.get('partial', 0):>9}"
                  f"{other:>7}{human_size(row['size']):>11}")
    else:
        print("  no entries")
    old = [e for e in summary.entries if e.status == "old-format"]
    if old:
        print(f"entries of an older cache format (never read): {len(old)}, "
              f"{human_size(sum(e.size for e in old))}; `clipaudit cache clean --old` removes them")
    bad = [e for e in summary.entries if e.status == "corrupt"]
    if bad:
        print(f"entries with a missing or foreign meta.json: {len(bad)}; see `clipaudit cache verify`")
    if summary.temps:
        print(f"stale temporary files (killed runs): {len(summary.temps)}, "
              f"{human_size(sum(s for _, s in summary.temps))}; `clipaudit cache clean` removes them")
        for path, size in summary.temps[:20]:
            print(f"  {_rel(path, root)}  {human_size(size)}")
        if len(summary.temps) > 20:
            print(f"  ... and {len(summary.temps) - 20} more")
    else:
        print("stale temporary files: none")
    return 0


def _verify(root: Path, fix: bool) -> int:
    from ..cache.admin import verify_cache

    reports = verify_cache(root, fix=fix)
    bad = [r for r in reports if r.problems]
    busy = [r for r in reports if r.status == "busy"]
    old = [r for r in reports if r.status == "old-format"]
    print(f"checked {len(reports) - len(busy) - len(old)} entries under {root}: "
          f"{len(reports) - len(bad) - len(busy) - len(old)} intact, {len(bad)} corrupt"
          + (f", {len(old)} of an older format (not checked)" if old else "")
          + (f", {len(busy)} busy (locked by another process; not checked)" if busy else ""))
    for r in bad:
        for path, reason in r.problems:
            print(f"  {_rel(path, root)}: {reason}" + ("  [deleted]" if fix else ""))
    if bad and not fix:
        print("run `clipaudit cache verify --fix` to delete them (the next run computes them again)")
    return 1 if bad else 0


def _clean(root: Path, old: bool, everything: bool) -> int:
    from ..cache.admin import clean_cache, human_size

    removed, kept = clean_cache(root, old=old, everything=everything)
    for path, size in removed:
        print(f"removed {_rel(path, root)}  {human_size(size)}")
    print(f"removed {len(removed)} item(s), {human_size(sum(s for _, s in removed))} from {root}")
    for path in kept:
        print(f"left alone (not a cache entry): {_rel(path, root)}")
    return 0


def run(args: argparse.Namespace) -> int:
    root = _root(args)
    if args.cache_action == "info":
        return _info(root, args.json)
    if args.cache_action == "verify":
        return _verify(root, args.fix)
    return _clean(root, args.old, args.everything)
