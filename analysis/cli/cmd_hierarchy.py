"""``clipaudit hierarchy``: WordNet hierarchy reranking of low-confidence predictions (Ge et al. 2023)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

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
    from ..data import wordnet as w

    wnids = None
    kind = args.class_map
    if kind == "auto":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        kind = "imagenet1k" if list(classnames) == list(IMAGENET_CLASSNAMES) else "lemma"
    if kind == "imagenet1k":
        if len(classnames) != 1000:
            raise ClipauditError(f"--class-map imagenet1k needs the 1000 ImageNet-1k classes; the dataset has "
                                 f"{len(classnames)}.")
        wnids = w.imagenet_wnids()
    path = args.overrides or (w.find_override_file(dataset_name) if kind == "lemma" else None)
    overrides = w.load_overrides(path) if path else None
    mapping = w.map_classes(wn, classnames, wnids=wnids, overrides=overrides,
                            override_source=str(path) if path else "overrides", ambiguous=args.ambiguous)
    return mapping, w.class_nodes(classnames, mapping.synsets), str(path) if path else kind


def _low_confidence(args: argparse.Namespace, model: Any, dataset: Any, cache: Any,
                    index: np.ndarray) -> np.ndarray:
    """O = O_T ∪ O_B for the rows ``index`` of the dataset: the confidence pipeline's ``in_O`` column.

    The only thing used from :mod:`analysis.confidence`. An image readable raw but not flipped (so absent
    from its table) counts as low-confidence.
    """
    from ..confidence import run_confidence

    table = run_confidence(model, dataset, cache, templates=args.templates).table
    in_o = dict(zip(table["index"].to_numpy().tolist(), table["in_O"].to_numpy(bool).tolist()))
    return np.array([in_o.get(int(i), True) for i in index], bool)


def run(args: argparse.Namespace) -> int:
    from ..data import load_templates
    from ..data.wordnet import load_wordnet
    from ..ensemble import ensemble_weights, logits
    from ..hierarchy import HierarchyOptions, run_hierarchy
    from ..results import write_run

    keep = None if args.keep_fraction >= 1 else args.keep_fraction
    options = HierarchyOptions(top_k=args.top_k, max_children=args.max_children,
                               parent_policy=args.parent_policy, parent_words=args.parent_words,
                               drop_abstract=not args.keep_abstract, keep_fraction=keep,
                               prune_children=not args.keep_pruned_children)
    tset = load_templates(args.templates)
    if tset.per_class is not None:
        raise ClipauditError(f"--templates {tset.name!r} is a per-class (CuPL) set; the hierarchy method needs "
                             f"templates shared by all classes (e.g. openai_imagenet).")
    prune_set = load_templates(args.prune_templates) if args.prune_templates else tset
    model = c.load_model_from_args(args)
    dataset = c.load_dataset_from_args(args)
    cache = c.cache_from_args(args)
    wn = load_wordnet()  # prepared under the default clipaudit cache dir, not the embedding --cache-dir
    mapping, nodes, map_source = class_nodes_for(args, wn, list(dataset.classnames), dataset.name)

    raw = cache.image_features(model, dataset)
    index = np.flatnonzero(raw.valid)
    if len(index) == 0:
        raise ClipauditError(f"No readable images in dataset {dataset.name!r}.")
    feats = raw.features[index]
    labels = np.asarray(dataset.labels)[index]
    scale = float(model.logit_scale)
    name_only = logits(feats, ensemble_weights(cache.class_embeddings(model, dataset.classnames, "name_only")),
                       scale)
    if args.variant == "ensemble":
        base = logits(feats, ensemble_weights(cache.class_embeddings(model, dataset.classnames, tset)), scale)
        templates = list(tset.templates)
    else:
        base, templates = name_only, ["{}"]
    candidates = name_only if args.candidates == "name-only" else base
    mask = None if args.rerank_set == "all" else _low_confidence(args, model, dataset, cache, index)

    result = run_hierarchy(
        feats, labels, base, nodes, lambda texts: cache.text_features(model, texts), mask=mask, options=options,
        templates=templates, candidate_logits=candidates,
        encode_raw=lambda texts: cache.text_features_raw(model, texts), prune_templates=list(prune_set.templates),
    )
    result.predictions["index"] = index
    tables = {"per_class": result.per_class, "predictions": result.predictions,
              "class_map": mapping.to_frame()}
    if result.pruning is not None:
        tables["pruning"] = result.pruning
    path = write_run(
        args.results_dir, task="hierarchy_rerank", dataset=dataset.name, model=model.info.name,
        pretrained=model.info.pretrained, metrics=result.metrics, tables=tables,
        extra={"model_info": model.info.as_dict(), "dataset_fingerprint": dataset.fingerprint(),
               "classnames": list(dataset.classnames), "set": args.rerank_set, "variant": args.variant,
               "candidates": args.candidates, "templates": tset.name, "prune_templates": prune_set.name,
               "class_map": map_source, "unmapped_classes": mapping.unmapped,
               "ambiguous_classes": mapping.ambiguous, "skipped": raw.skipped,
               "wordnet_version": wn.get_version(), **result.info},
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
