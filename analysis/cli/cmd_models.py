"""``clipaudit models``: list the models that can be loaded."""

from __future__ import annotations

import argparse
import fnmatch

NAME = "models"
HELP = "list loadable models (clipaudit models and open_clip architectures with their tags)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'ViT-B*'")


def run(args: argparse.Namespace) -> int:
    from ..models import PROJECT_MODELS, list_models

    known = list_models()
    print("clipaudit models (weights shipped or trained by this project):")
    for name in known["clipaudit"]:
        if fnmatch.fnmatch(name, args.pattern):
            print(f"  {name:<24} {PROJECT_MODELS.help(name)}")
    print("open_clip architectures (pretrained tags need network; or pass --pretrained CHECKPOINT):")
    for line in known["open_clip"]:
        if fnmatch.fnmatch(line.split(" ")[0], args.pattern):
            print(f"  {line}")
    return 0
