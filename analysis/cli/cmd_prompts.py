"""``clipaudit prompts``: list or show prompt sets."""

from __future__ import annotations

import argparse

NAME = "prompts"
HELP = "list prompt sets, or show one (--show NAME)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--show", default=None, help="print the templates of a prompt set")


def run(args: argparse.Namespace) -> int:
    from ..data.prompts import TEMPLATE_SETS, list_template_sets, load_templates

    if args.show:
        tset = load_templates(args.show)
        if tset.per_class:
            for cls, prompts in tset.per_class.items():
                print(f"{cls}: {len(prompts)} prompts, e.g. {prompts[0]!r}")
        for t in tset.templates:
            print(t)
        return 0
    for name in list_template_sets():
        desc = TEMPLATE_SETS.help(name) if name in TEMPLATE_SETS else "file in prompts/"
        print(f"  {name:<22} {desc}")
    return 0
