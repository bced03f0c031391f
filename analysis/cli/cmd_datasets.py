"""``clipaudit datasets`` and ``clipaudit prompts``: what data and prompt sets are known."""

from __future__ import annotations

import argparse

NAME = "datasets"
HELP = "list named datasets and the accepted dataset paths"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from ..data import DATASETS

    print("named datasets (--dataset NAME):")
    print(DATASETS.describe())
    print("paths (--dataset PATH):")
    print("  FOLDER/                one subfolder per class (classnames.txt or folder names); with train/ val/ test/")
    print("                         subfolders, --split picks one (default: test, else val, else train)")
    print("  FOLDER/ of nXXXXXXXX/  ImageNet-style WordNet-id folders (1000-way labels)")
    print("  FILE.csv | FILE.jsonl  manifest: path + label and/or caption(s) columns; an optional split column is")
    print("                         filtered by --split")
    return 0
