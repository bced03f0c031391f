"""``clipaudit reproduce``: the papers' tables, our numbers next to the published ones.

The model, data, prompt, output and cache options are generated from the option dataclasses every task
command uses (:mod:`analysis.tasks._common`), and the tables' method options from the tasks' own
(:mod:`analysis.reproduce.options`), so a flag means the same here as everywhere else.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from .._checks import ClipauditError

NAME = "reproduce"
HELP = "reproduce a paper's table (CLIP, Hierarchy-CLIP, mutual knowledge, the demo model) next to its numbers"
DESCRIPTION = """\
Run one published table (or `all`) with the given model(s) and datasets, print our numbers next to the
paper's (from the shipped published.csv, with their source) and write them to OUT/reproduce/ as CSV,
Parquet, Markdown and a run JSON that `clipaudit report` shows; file names follow the run's settings
(table, datasets and subset, models, a hash of everything else), so other settings never overwrite them.
Without --model, a table runs on the paper's models (open_clip tags, downloaded on first use).
--root is the folder holding the ImageNet family (imagenet val, imagenetv2, sketch, imagenet-r,
imagenet-a; see `clipaudit datasets`). --limit N runs on a stratified subset of about N images per
dataset (as --limit everywhere): a quick check, flagged in every output.

examples:
  clipaudit reproduce --list
  clipaudit reproduce demo-fashion-mnist                       # clipaudit-lit, minutes on a CPU
  clipaudit reproduce ge2023-tab1 -m ViT-B-16 -p openai --root /data/imagenet-family
  clipaudit reproduce ge2023-tab3 -m RN50 -p openai -m ViT-L-14 -p openai --root /data --limit 2000
  clipaudit reproduce sammani2024-mi-auc -m ViT-B-16 -p dfn2b --root /data \\
      --descriptors descriptors_imagenet.json --n-classes 50
"""

#: Old spellings still accepted (with a warning): flag -> (option field, new flag).
DEPRECATED = {"--data-root": ("root", "--root")}


class _Deprecated(argparse.Action):
    """Store under the new option's name and say which flag to use instead."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        new = DEPRECATED[str(option_string)][1]
        print(f"clipaudit reproduce: {option_string} is deprecated; use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _help(cls: type, name: str) -> str:
    import dataclasses

    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..reproduce.options import DemoOptions, GeOptions, MutualKnowledgeOptions
    from ..tasks._common import DataOptions, ModelOptions, OutputOptions
    from ..tasks._options import add_arguments as add_options

    parser.add_argument("table", nargs="?", default=None, help="table name (see --list) or 'all'")
    parser.add_argument("--list", action="store_true", help="list the tables and exit")
    g = parser.add_argument_group("models")
    g.add_argument("--model", "-m", dest="models", action="append", default=None, metavar="MODEL",
                   help=_help(ModelOptions, "model") + "; repeat to run several (default: the table's paper models)")
    g.add_argument("--pretrained", "-p", dest="pretrained_tags", action="append", default=None, metavar="PRETRAINED",
                   help=_help(ModelOptions, "pretrained") + "; one per --model, in order ('none' for no weights)")
    g.add_argument("--paper-model", action="append", default=None,
                   help="paper backbone name to compare each --model with (e.g. ViT-B/16), when it cannot be "
                        "read from --model/--pretrained (local checkpoints); one per --model")
    add_options(g, ModelOptions, skip=("model", "pretrained"))
    d = parser.add_argument_group("data and prompts")
    add_options(d, DataOptions, skip=("dataset", "split", "classnames"))
    d.add_argument("--datasets", nargs="+", default=None,
                   help="only these datasets of multi-dataset tables (e.g. imagenet-val imagenet-r)")
    for flag, (dest, _new) in DEPRECATED.items():
        try:
            parser.add_argument(flag, dest=dest, action=_Deprecated, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        except argparse.ArgumentError:  # the shared option declares the old spelling itself
            pass
    add_options(parser, GeOptions, title="Hierarchy-CLIP tables (ge2023-*): the hierarchy task's options")
    add_options(parser, MutualKnowledgeOptions,
                title="mutual-knowledge tables (sammani2024-*): the concepts task's options")
    add_options(parser, DemoOptions, title="demo table")
    add_options(parser, OutputOptions, title="output and cache", skip=("skip_existing",))


def _list() -> int:
    from ..reproduce import TABLES, load_published

    pub = load_published()
    print("reproducible tables (clipaudit reproduce NAME):")
    for name in TABLES.list():
        spec = TABLES.get(name)
        n = int(pub.loc[pub["table"] == name, "value"].notna().sum())
        models = ", ".join(f"{m}" + (f" ({p})" if p else "") for m, p in spec.default_models)
        print(f"  {name:<25} {spec.title}")
        print(f"  {'':<25}   datasets: {', '.join(spec.datasets)}; default models: {models}; "
              f"{n} published numbers")
    return 0


def _models(models: list[str] | None, pretrained: list[str] | None,
            defaults: tuple[tuple[str, str | None], ...]) -> list[tuple[str, str | None]]:
    if pretrained and not models:
        raise ClipauditError("--pretrained needs --model (one --pretrained per --model).")
    names = models or [m for m, _ in defaults]
    tags: list[str | None] = [None if p in (None, "", "none") else p for p in (pretrained or [])] if models \
        else [p for _, p in defaults]
    if len(tags) > len(names):
        raise ClipauditError(f"{len(tags)} --pretrained for {len(names)} --model; give at most one per model.")
    return list(zip(names, tags + [None] * (len(names) - len(tags))))


def _print(result: Any) -> None:
    df = result.comparison
    print(f"\n{result.spec.title}")
    print(("*** " + result.subset_note + " ***") if result.subset else result.subset_note)
    for name, msg in result.missing.items():
        print(f"  dataset {name} not run: {msg}")

    def f(v: object) -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else (
            f"{v:.3f}" if isinstance(v, float) else str(v))

    head = f"  {'model':<22}{'dataset':<18}{'row':<22}{'column':<28}{'ours':>9}{'paper':>9}{'diff':>9}"
    print(head)
    for r in df.itertuples(index=False):
        print(f"  {str(r.paper_model)[:21]:<22}{str(r.dataset)[:17]:<18}{str(r.row)[:21]:<22}{str(r.column)[:27]:<28}"
              f"{f(r.ours):>9}{f(r.published):>9}{f(r.diff):>9}")


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    if args.table is None:
        raise ClipauditError("Give a table name (see `clipaudit reproduce --list`) or 'all'.")
    from ..data import load_templates
    from ..reproduce import (
        TABLES,
        DemoOptions,
        GeOptions,
        ModelEntry,
        MutualKnowledgeOptions,
        ReproContext,
        paper_model_name,
        run_table,
        write_result,
    )
    from ..tasks._common import DataOptions, ModelOptions, OutputOptions
    from ..tasks._load import load_model, make_cache
    from ..tasks._options import from_namespace

    names = TABLES.list() if args.table == "all" else [TABLES.get(args.table).name]
    model_o = from_namespace(ModelOptions(), args)
    data_o = from_namespace(DataOptions(), args)
    out_o = from_namespace(OutputOptions(), args)
    ge_o = from_namespace(GeOptions(), args)
    concepts_o = from_namespace(MutualKnowledgeOptions(), args)
    demo_o = from_namespace(DemoOptions(), args)
    load_templates(data_o.templates)  # fail early on a bad prompt set
    views = tuple(dict.fromkeys(v for n in names for v in TABLES.get(n).views))  # one decode pass for all tables
    cache = make_cache(out_o)
    loaded: dict[tuple[str, str | None], Any] = {}
    memo: dict[Any, Any] = {}  # datasets, task contexts and derived results shared by the tables
    for name in names:
        spec = TABLES.get(name)
        pairs = _models(args.models, args.pretrained_tags, spec.default_models)
        if args.paper_model and len(args.paper_model) != len(pairs):
            raise ClipauditError(f"{len(args.paper_model)} --paper-model for {len(pairs)} models; give one per model.")
        entries = []
        for i, (m, p) in enumerate(pairs):
            if (m, p) not in loaded:
                loaded[m, p] = load_model(m, p, model_o.device)
            model = loaded[m, p]
            paper = args.paper_model[i] if args.paper_model else paper_model_name(model.info.name,
                                                                                   model.info.pretrained)
            entries.append(ModelEntry(model, paper))
        ctx = ReproContext(entries, cache, root=data_o.root, limit=data_o.limit, seed=data_o.seed,
                           templates=data_o.templates, datasets=args.datasets, ge=ge_o, concepts=concepts_o,
                           demo=demo_o, views=views, memo=memo)
        result = run_table(name, ctx)
        path, md = write_result(result, out_o.out)
        _print(result)
        print(f"results: {path} (Markdown: {md})")
    return 0
