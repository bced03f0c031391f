"""``clipaudit hierarchy``: WordNet hierarchy reranking of low-confidence predictions (Ge et al. 2023)."""

from __future__ import annotations

import argparse
from typing import Any

from .._checks import ClipauditError
from . import _common as c

NAME = "hierarchy"
HELP = "rerank low-confidence top-5 predictions with WordNet parents and children (Hierarchy-CLIP)"
DESCRIPTION = """\
Hierarchy-CLIP label augmentation (Ge, Ren et al., CVPR 2023, §4.2, Eq. 3). For each image of the
low-confidence set O (self-consistency: O_T ∪ O_B, see `clipaudit confidence`; or all images), the
top-5 classes of the name-only classifier are rescored: class c scores the max, over c and its WordNet
children, of the cosine with "{child} which is a kind of {parent of c}". Images outside O keep their
prediction. WordNet is pruned to the words whose unnormalised text-embedding norm varies most across
templates (--keep-fraction; 1 = no pruning). Class names map to WordNet by ImageNet wnid, by
prompts/wordnet_overrides/<dataset>.json, or by lemma lookup (see `clipaudit wordnet map`).

Prints accuracy before/after on the full set, on O and outside O (the paper's Tab. 1 columns), and
fixed/broken predictions; writes them with per-class and per-sample tables to RESULTS_DIR/hierarchy/.

examples:
  clipaudit hierarchy                                     # clipaudit-lit on the bundled subset
  clipaudit hierarchy --set all --keep-fraction 1 --max-children 10 --parent-words all-lemmas
  clipaudit hierarchy --variant ensemble                  # Tab. 4: hierarchy + prompt ensembling
  clipaudit hierarchy -m ViT-B-16 -p openai -d imagenet --root /data/imagenet/val
"""


def _max_children(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'all' or an integer >= 0, got {text!r}")
    return value


def add_wordnet_mapping_args(parser: argparse.ArgumentParser) -> None:
    """Options choosing how class names map to WordNet (shared with `clipaudit wordnet map`)."""
    g = parser.add_argument_group("WordNet mapping")
    g.add_argument("--class-map", default="auto", choices=["auto", "imagenet1k", "lemma"],
                   help="imagenet1k: class i is ImageNet-1k wnid i (timm's list); lemma: override file then "
                        "noun lookup; auto: imagenet1k when the classes are open_clip's 1000 ImageNet names "
                        "(default: auto)")
    g.add_argument("--overrides", default=None,
                   help="class -> synset JSON (default: prompts/wordnet_overrides/<dataset>.json if present)")
    g.add_argument("--ambiguous", default="first", choices=["first", "skip"],
                   help="class names with several noun senses: take the most frequent (first) or leave "
                        "unmapped (default: first)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_model_args(parser)
    c.add_dataset_args(parser)
    c.add_prompt_args(parser)
    add_wordnet_mapping_args(parser)
    g = parser.add_argument_group("method")
    g.add_argument("--set", dest="rerank_set", default="low-confidence", choices=["low-confidence", "all"],
                   help="which images are reranked: the self-consistency set O = O_T ∪ O_B (prompt sets from "
                        "--templates, horizontal flip) or every image (default: low-confidence)")
    g.add_argument("--variant", default="name-only", choices=["name-only", "ensemble"],
                   help="name-only: base classifier and hierarchy texts use the bare '{}' template (Tab. 1); "
                        "ensemble: both use --templates, averaged (Tab. 4) (default: name-only)")
    g.add_argument("--candidates", default="name-only", choices=["name-only", "base"],
                   help="where the top-k candidates come from: the name-only classifier (paper) or the base "
                        "classifier of --variant (default: name-only)")
    g.add_argument("--top-k", type=int, default=5, help="candidates reranked per image (default: 5)")
    g.add_argument("--max-children", type=_max_children, default=None,
                   help="children per class: an integer or 'all' (paper: all; reference code: 10; "
                        "default: all)")
    g.add_argument("--parent-policy", default="first", choices=["first", "all-max"],
                   help="classes with several WordNet parents: first parent, or one text per parent with the "
                        "max taken (default: first)")
    g.add_argument("--parent-words", default="first-lemma", choices=["first-lemma", "all-lemmas"],
                   help="parent text: first synonym ('dog') or all synonyms comma-joined as the reference code "
                        "(default: first-lemma)")
    g.add_argument("--keep-fraction", type=float, default=0.4,
                   help="fraction of hierarchy words kept by norm-variance pruning; 1 = no pruning "
                        "(paper: 0.4; Tab. 7 also 0.3) (default: 0.4)")
    g.add_argument("--prune-templates", default=None,
                   help="prompt set whose norm variance ranks words (default: --templates)")
    g.add_argument("--keep-abstract", action="store_true",
                   help="allow abstract WordNet nodes (noun.Tops within 4 steps of 'entity') as parents")
    g.add_argument("--keep-pruned-children", action="store_true",
                   help="pruning removes parents only; children are all kept")
    c.add_output_args(parser)


def class_nodes_for(args: argparse.Namespace, wn: Any, classnames: list[str],
                    dataset_name: str) -> tuple[Any, list[Any], str]:
    """Map ``classnames`` to WordNet per the mapping options: (ClassMapping, ClassNodes, mapping source)."""
    from ..hierarchy import map_dataset_classes

    return map_dataset_classes(wn, classnames, dataset_name, class_map=args.class_map, overrides=args.overrides,
                               ambiguous=args.ambiguous)


def options_from_args(args: argparse.Namespace) -> Any:
    from ..hierarchy import HierarchyOptions

    keep = None if args.keep_fraction >= 1 else args.keep_fraction
    return HierarchyOptions(top_k=args.top_k, max_children=args.max_children, parent_policy=args.parent_policy,
                            parent_words=args.parent_words, drop_abstract=not args.keep_abstract,
                            keep_fraction=keep, prune_children=not args.keep_pruned_children)


def run(args: argparse.Namespace) -> int:
    from ..confidence import run_confidence
    from ..data import load_templates
    from ..data.wordnet import load_wordnet
    from ..hierarchy import rerank_dataset
    from ..results import write_run

    options = options_from_args(args)
    tset = load_templates(args.templates)
    if tset.per_class is not None:
        raise ClipauditError(f"--templates {tset.name!r} is a per-class (CuPL) set; the hierarchy method needs "
                             f"templates shared by all classes (e.g. openai_imagenet).")
    model = c.load_model_from_args(args)
    dataset = c.load_dataset_from_args(args)
    cache = c.cache_from_args(args)
    wn = load_wordnet()  # prepared under the default clipaudit cache dir, not the embedding --cache-dir
    # O = O_T ∪ O_B: the confidence pipeline's ``in_O`` column (the only thing used from it)
    low = None if args.rerank_set == "all" else run_confidence(model, dataset, cache, templates=tset).table
    run_ = rerank_dataset(model, dataset, cache, templates=tset, options=options, variant=args.variant,
                          candidates=args.candidates, low_confidence=low, prune_templates=args.prune_templates,
                          class_map=args.class_map, overrides=args.overrides, ambiguous=args.ambiguous, wordnet=wn)
    result, mapping = run_.result, run_.mapping
    path = write_run(
        args.results_dir, task="hierarchy_rerank", dataset=dataset.name, model=model.info.name,
        pretrained=model.info.pretrained, metrics=result.metrics, tables=run_.tables,
        extra={"model_info": model.info.as_dict(), "dataset_fingerprint": dataset.fingerprint(), **run_.extra},
    )
    if mapping.unmapped or mapping.ambiguous:
        print(f"WordNet: {len(mapping.unmapped)} unmapped class(es) {mapping.unmapped[:5]} (scored by name only); "
              f"{len(mapping.ambiguous)} ambiguous {list(mapping.ambiguous)[:5]} (first sense used). "
              f"See `clipaudit wordnet map`.")
    m = result.metrics
    print(f"hierarchy rerank, {model.info.name} on {dataset.name} ({m['n']} images; O = {m['n_low']} "
          f"[{args.rerank_set}]; variant {args.variant}):")
    print(f"  {'':<22}{'before':>10}{'after':>10}")
    for label, key in (("full set", "acc1"), ("low confidence (O)", "acc1_low"), ("rest", "acc1_high")):
        print(f"  {label:<22}{m[key + '_before']:>10.4f}{m[key + '_after']:>10.4f}")
    print(f"  changed {m['n_changed']}: fixed {m['n_fixed']}, broken {m['n_broken']}, "
          f"wrong->wrong {m['n_changed_wrong_to_wrong']}; top-{options.top_k} hit on O "
          f"{m.get('topk_low_upper_bound', float('nan')):.4f}")
    print(f"results: {path}")
    return 0
