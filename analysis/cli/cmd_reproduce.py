"""``clipaudit reproduce``: the papers' tables, our numbers next to the published ones."""

from __future__ import annotations

import argparse
import math

from .._checks import ClipauditError
from . import _common as c

NAME = "reproduce"
HELP = "reproduce a paper's table (CLIP, Hierarchy-CLIP, mutual knowledge, the demo model) next to its numbers"
DESCRIPTION = """\
Run one published table (or `all`) with the given model(s) and datasets, print our numbers next to the
paper's (from the shipped published.csv, with their source) and write them to
RESULTS_DIR/reproduce/ as CSV, Parquet, Markdown and a run JSON that `clipaudit report` shows.
Without --model, a table runs on the paper's models (open_clip tags, downloaded on first use).
--data-root is the folder holding the ImageNet family (imagenet val, imagenetv2, sketch, imagenet-r,
imagenet-a; see `clipaudit datasets`). --limit N runs on a stratified subset of about N images per
dataset: a quick check, flagged in every output.

examples:
  clipaudit reproduce --list
  clipaudit reproduce demo-fashion-mnist                       # clipaudit-lit, minutes on a CPU
  clipaudit reproduce ge2023-tab1 -m ViT-B-16 -p openai --data-root /data/imagenet-family
  clipaudit reproduce ge2023-tab3 -m RN50 -p openai -m ViT-L-14 -p openai --data-root /data --limit 2000
  clipaudit reproduce sammani2024-mi-auc -m ViT-B-16 -p dfn2b --data-root /data \\
      --descriptors descriptors_imagenet.json --concept-classes 50
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", nargs="?", default=None, help="table name (see --list) or 'all'")
    parser.add_argument("--list", action="store_true", help="list the tables and exit")
    c.add_model_args(parser, multiple=True)
    parser.add_argument("--paper-model", action="append", default=None,
                        help="paper backbone name to compare each --model with (e.g. ViT-B/16), when it cannot be "
                             "read from --model/--pretrained (local checkpoints); one per --model")
    g = parser.add_argument_group("data")
    g.add_argument("--data-root", default=None, help="folder holding the datasets")
    g.add_argument("--limit", type=int, default=None,
                   help="run on a stratified subset of about N images per dataset (flagged in the output)")
    g.add_argument("--datasets", nargs="+", default=None,
                   help="only these datasets of multi-dataset tables (e.g. imagenet-val imagenet-r)")
    g.add_argument("--seed", type=int, default=0, help="seed of --limit subsets and K-means (default: 0)")
    c.add_prompt_args(parser)
    h = parser.add_argument_group("Hierarchy-CLIP tables")
    h.add_argument("--keep-fraction", type=float, default=0.4,
                   help="WordNet words kept by pruning (Tab. 1/3/4/5; 1 = none) (default: 0.4)")
    h.add_argument("--max-children", type=int, default=None, help="children per class (default: all)")
    s = parser.add_argument_group("mutual-knowledge tables")
    s.add_argument("--descriptors", default=None, help="descriptor pool (.json/.txt) for the Sammani tables")
    s.add_argument("--concept-classes", type=int, default=None, help="first N classes only (default: all)")
    s.add_argument("--images-per-class", type=int, default=50, help="images per class (default: 50)")
    d = parser.add_argument_group("demo table")
    d.add_argument("--demo-dataset", default="fashion-mnist", help="dataset of the demo table (default: fashion-mnist)")
    d.add_argument("--demo-root", default=None, help="folder of the demo dataset (default: Debian's or download)")
    c.add_output_args(parser)


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
    names = models or [m for m, _ in defaults]
    tags = pretrained if models else [p for _, p in defaults]
    tags = list(tags or [])
    if len(tags) > len(names):
        raise ClipauditError(f"{len(tags)} --pretrained for {len(names)} --model; give at most one per model.")
    return list(zip(names, tags + [None] * (len(names) - len(tags))))


def _print(result: object) -> None:
    df = result.comparison  # type: ignore[attr-defined]
    print(f"\n{result.spec.title}")  # type: ignore[attr-defined]
    print(("*** " + result.subset_note + " ***") if result.subset else result.subset_note)  # type: ignore[attr-defined]
    for name, msg in result.missing.items():  # type: ignore[attr-defined]
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
    from ..models import load_model
    from ..reproduce import TABLES, ModelEntry, ReproContext, paper_model_name, run_table, write_result

    names = TABLES.list() if args.table == "all" else [TABLES.get(args.table).name]
    load_templates(args.templates)  # fail early on a bad prompt set
    cache = c.cache_from_args(args)
    options = {"hierarchy": {"keep_fraction": None if args.keep_fraction >= 1 else args.keep_fraction,
                             "max_children": args.max_children},
               "descriptors": args.descriptors, "concept_classes": args.concept_classes,
               "images_per_class": args.images_per_class, "demo_dataset": args.demo_dataset,
               "demo_root": args.demo_root}
    loaded: dict[tuple[str, str | None], object] = {}
    memo: dict[object, object] = {}  # datasets, embeddings and pipeline runs shared by the tables
    for name in names:
        spec = TABLES.get(name)
        pairs = _models(args.model, args.pretrained, spec.default_models)
        if args.paper_model and len(args.paper_model) != len(pairs):
            raise ClipauditError(f"{len(args.paper_model)} --paper-model for {len(pairs)} models; give one per model.")
        entries = []
        for i, (m, p) in enumerate(pairs):
            if (m, p) not in loaded:
                loaded[m, p] = load_model(m, p, device=c.resolve_device(args.device))
            model = loaded[m, p]
            paper = args.paper_model[i] if args.paper_model else paper_model_name(model.info.name,  # type: ignore[attr-defined]
                                                                                   model.info.pretrained)  # type: ignore[attr-defined]
            entries.append(ModelEntry(model, paper))  # type: ignore[arg-type]
        ctx = ReproContext(entries, cache, data_root=args.data_root, limit=args.limit, seed=args.seed,
                           templates=args.templates, datasets=args.datasets, options=options, memo=memo)
        result = run_table(name, ctx)
        path, md = write_result(result, args.results_dir)
        _print(result)
        print(f"results: {path} (Markdown: {md})")
    return 0
