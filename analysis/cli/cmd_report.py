"""``clipaudit report``: rebuild the HTML report from saved results, without a model."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "build the self-contained HTML report (+ JSON sidecar) from a results folder"
DESCRIPTION = """\
Read every run file under RESULTS_DIR (as written by the other commands or by `clipaudit audit`) and
write OUT/index.html (one file: no network, figures embedded) and OUT/report.json (everything the
page shows, for diffs and comparisons). No model is loaded.

example:
  clipaudit report results/audit/clipaudit-lit_bundled --out reports/clipaudit-lit_bundled
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", help="folder with run JSON files (searched recursively)")
    parser.add_argument("--out", default=None, help="output folder (default: reports/<results folder name>)")
    parser.add_argument("--title", default=None, help="page title")


def run(args: argparse.Namespace) -> int:
    from ..report import build_report

    path = build_report(args.results_dir, args.out, title=args.title)
    print(f"report: {path}")
    return 0
