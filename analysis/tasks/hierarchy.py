"""Task ``hierarchy``: WordNet hierarchy reranking of the low-confidence predictions (Ge, Ren et al., CVPR 2023)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from . import register
from ._options import option
from ._task import Task, TaskResult, TaskSkipped

__all__ = ["HierarchyTaskOptions", "WordNetMapOptions", "TASK", "hierarchy_examples"]


def _max_children(text: str) -> int | None:
    from .._checks import ClipauditError

    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ClipauditError(f"--max-children: expected 'all' or an integer >= 0, got {text!r}.")
    return value


@dataclass
class WordNetMapOptions:
    """How class names map to WordNet synsets (shared with ``clipaudit wordnet map``)."""

    class_map: str = option("auto", choices=("auto", "imagenet1k", "lemma"),
                            help="imagenet1k: class i is ImageNet-1k wnid i; lemma: override file then noun lookup; "
                                 "auto: imagenet1k when the classes are open_clip's 1000 ImageNet names")
    overrides: str | None = option(None, help="class -> synset JSON (none: prompts/wordnet_overrides/<dataset>.json "
                                              "if shipped)")
    ambiguous: str = option("first", choices=("first", "skip"),
                            help="class names with several noun senses: most frequent sense, or leave unmapped")


@dataclass
class HierarchyTaskOptions(WordNetMapOptions):
    set: str = option("low-confidence", choices=("low-confidence", "all"),
                      help="which images are reranked: the self-consistency set O (from the confidence task of "
                           "the same run, else computed with its defaults) or every image")
    variant: str = option("name-only", choices=("name-only", "ensemble"),
                          help="name-only: base classifier and hierarchy texts use the bare '{}' template (Tab. 1); "
                               "ensemble: both use --templates, averaged (Tab. 4)")
    candidates: str = option("name-only", choices=("name-only", "base"),
                             help="where the top-k candidates come from: the name-only classifier (paper) or the "
                                  "base classifier of --variant")
    top_k: int = option(5, low=1, help="candidates reranked per image")
    max_children: int | None = option(None, parse=_max_children, metavar="N|all", default_text="all",
                                      help="children per class (paper: all; reference code: 10)")
    parent_policy: str = option("first", choices=("first", "all-max"),
                                help="classes with several WordNet parents: first parent, or one text per parent "
                                     "with the max taken")
    parent_words: str = option("first-lemma", choices=("first-lemma", "all-lemmas"),
                               help="parent text: first synonym, or all synonyms comma-joined (reference code)")
    keep_fraction: float = option(0.4, low=0.0, high=1.0,
                                  help="fraction of hierarchy words kept by norm-variance pruning; 1 = no pruning "
                                       "(paper: 0.4; Tab. 7 also 0.3)")
    prune_templates: str | None = option(None, help="prompt set whose norm variance ranks words (none: --templates)")
    keep_abstract: bool = option(False, help="allow abstract WordNet nodes (noun.Tops near 'entity') as parents")
    keep_pruned_children: bool = option(False, help="pruning removes parents only; children are all kept")
    examples: int = option(6, low=0, help="fixed and broken predictions shown with thumbnails (each)")
    thumbnail_size: int = option(64, low=8, help="thumbnail size in pixels")


def hierarchy_examples(predictions: Any, n: int) -> Any:
    """The first ``n`` fixed (wrong -> right) and ``n`` broken (right -> wrong) predictions.

    ``predictions`` has ``index``, ``label``, ``pred_before``, ``pred_after`` (as
    :func:`analysis.hierarchy.run_hierarchy` returns); rows keep the table's order.
    """
    import pandas as pd

    p = predictions[predictions["label"] >= 0]
    fixed = p[(p["pred_before"] != p["label"]) & (p["pred_after"] == p["label"])].head(n)
    broken = p[(p["pred_before"] == p["label"]) & (p["pred_after"] != p["label"])].head(n)
    return pd.concat([fixed.assign(kind="fixed"), broken.assign(kind="broken")], ignore_index=True)


def _thumbnail(image: Any, size: int) -> bytes:
    from PIL import Image

    im = image.convert("RGB")
    scale = size / max(im.size)
    resample = Image.NEAREST if scale > 1 else Image.BICUBIC  # small images stay crisp when enlarged
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def run(ctx: Any, o: HierarchyTaskOptions) -> TaskResult:
    import pandas as pd

    from .._checks import ClipauditError
    from ..data import load_templates
    from ..data.wordnet import load_wordnet
    from ..hierarchy import HierarchyOptions, map_dataset_classes, rerank
    from .confidence import low_confidence_set

    s = ctx.state
    s.check_labelled("Hierarchy reranking")
    if s.per_class_prompts:
        raise ClipauditError(f"--templates {s.templates!r} is a per-class (CuPL) set; the hierarchy method needs "
                             "templates shared by all classes (e.g. openai_imagenet).")
    try:
        wn = load_wordnet()
    except ClipauditError as err:
        raise TaskSkipped(f"WordNet is not available: {err}") from None
    mapping, nodes, map_source = map_dataset_classes(wn, s.classnames, ctx.dataset.name, class_map=o.class_map,
                                                     overrides=o.overrides, ambiguous=o.ambiguous)
    mask, note = None, "every image reranked (set = all)"
    if o.set == "low-confidence":
        from_run = ctx.output("confidence") is not None
        mask = low_confidence_set(ctx).mask_for(s.index)
        note = ("low-confidence set O from the confidence stage" if from_run
                else "low-confidence set O computed here with the confidence defaults (the confidence task did "
                     "not run)")
    options = HierarchyOptions(top_k=o.top_k, max_children=o.max_children, parent_policy=o.parent_policy,
                               parent_words=o.parent_words, drop_abstract=not o.keep_abstract,
                               keep_fraction=None if o.keep_fraction >= 1 else o.keep_fraction,
                               prune_children=not o.keep_pruned_children)
    prune_set = load_templates(o.prune_templates) if o.prune_templates else ctx.templates
    result = rerank(s, nodes, lambda t: ctx.cache.text_features(ctx.model, t),
                    lambda t: ctx.cache.text_features_raw(ctx.model, t), mask=mask, options=options,
                    variant=o.variant, candidates=o.candidates, templates=ctx.templates, prune_templates=prune_set)
    names = s.classnames
    files: dict[str, bytes] = {}
    rows = []
    for r in hierarchy_examples(result.predictions, o.examples).to_dict("records"):
        i = int(r["index"])
        rel = f"{r['kind']}_{i}.png"
        try:
            files[rel] = _thumbnail(ctx.dataset.load_image(i), o.thumbnail_size)
        except OSError:
            rel = None
        rows.append({"kind": r["kind"], "index": i, "item": ctx.dataset.describe(i), "label": names[r["label"]],
                     "before": names[r["pred_before"]], "after": names[r["pred_after"]], "thumbnail": rel})
    tables = {"per_class": result.per_class, "predictions": result.predictions, "class_map": mapping.to_frame(),
              "examples": pd.DataFrame(rows, columns=["kind", "index", "item", "label", "before", "after",
                                                      "thumbnail"])}
    if result.pruning is not None:
        tables["pruning"] = result.pruning
    info = {"classnames": names, "set": o.set, "variant": o.variant, "candidates": o.candidates,
            "templates": s.templates, "prune_templates": prune_set.name, "class_map": map_source,
            "unmapped_classes": mapping.unmapped, "ambiguous_classes": mapping.ambiguous, "skipped": s.skipped,
            "wordnet_version": wn.get_version(), "low_confidence_source": note, **result.info}
    return TaskResult(result.metrics, tables, files=files, info=info, value=result)


def summary(result: TaskResult) -> str:
    """Console summary: the paper's Tab. 1 columns (full set, O, rest) and fixed/broken counts."""
    m = result.metrics
    n, n_low = m.get("n"), m.get("n_low")
    lines = [f"  {'images':<20} {'n':>6} {'before':>8} {'after':>8}"]
    for label, key, count in (("full set", "acc1", n), ("low confidence (O)", "acc1_low", n_low),
                              ("rest", "acc1_high", None if n is None or n_low is None else n - n_low)):
        before, after = m.get(f"{key}_before"), m.get(f"{key}_after")
        fmt = (lambda v: "n/a" if not isinstance(v, float) or v != v else f"{v:.4f}")  # noqa: E731
        lines.append(f"  {label:<20} {count if count is not None else '':>6} {fmt(before):>8} {fmt(after):>8}")
    lines.append(f"  fixed {m.get('n_fixed', 0)}, broken {m.get('n_broken', 0)}, changed {m.get('n_changed', 0)} "
                 f"({result.info.get('low_confidence_source', '')})")
    return "\n".join(lines)


TASK = register(Task(
    name="hierarchy",
    result_name="hierarchy_rerank",
    title="WordNet hierarchy reranking",
    help="Hierarchy-CLIP reranking (Ge et al. 2023) of the low-confidence predictions with WordNet",
    description="""\
Rerank the top-k name-only predictions of low-confidence images with WordNet (Ge, Ren et al., CVPR 2023,
§4.2): each candidate class is scored by its own name and its children's, each as "{child} which is a
kind of {parent}", and the maximum decides. Words are pruned by the variance of their text-embedding norm
over the templates (keep 40%). Class names map to WordNet by ImageNet-1k ids, an overrides file shipped
as prompts/wordnet_overrides/<dataset>.json, or by lemma lookup (see `clipaudit wordnet map`). Needs
WordNet (skipped with a reason when absent; `clipaudit wordnet status`).

Prints accuracy before/after on the full set, on O and outside O (the paper's Tab. 1 columns), and
fixed/broken predictions with thumbnails.

examples:
  clipaudit hierarchy                                     # clipaudit-lit on the bundled subset
  clipaudit hierarchy --set all --keep-fraction 1 --max-children 10 --parent-words all-lemmas
  clipaudit hierarchy --variant ensemble                  # Tab. 4: hierarchy + prompt ensembling
  clipaudit hierarchy -m ViT-B-16 -p openai -d imagenet --root /data/imagenet/val
""",
    options=HierarchyTaskOptions,
    run=run,
    headline=("acc1_before", "acc1_after", "n_fixed", "n_broken"),
    after=("confidence",),
    views=lambda o: ("hflip",) if o.set == "low-confidence" else (),
    summary=summary,
    order=30,
))
