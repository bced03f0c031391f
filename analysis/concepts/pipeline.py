"""The mutual-knowledge pipeline of Sammani & Deligiannis (NeurIPS 2024), one class at a time.

Per class (all its selected images decomposed jointly):

1. images squashed to the model's input size (the reference's ``crop=False``), patch tokens from
   :meth:`ClipModel.patch_tokens` (ViT: last block pre-norm, CLS dropped; CNN: final feature map), both
   from one decode of each image (:meth:`EmbeddingCache.pixels_and_tokens`);
2. foreground by graph decomposition (:mod:`.spectral`), refined by a dense CRF (:mod:`.crf`);
3. visual concepts by PCA and by K-means (:mod:`.clusters`);
4. three visual prompts per concept region (:mod:`.visual_prompts`), encoded by the cache
   (:meth:`EmbeddingCache.visual_prompts`: each L2-normalised, the three averaged);
5. descriptors per concept by optimal transport over the candidates (:mod:`.matching`), ordered by
   relevance to the whole image: the vision-side set D_v;
6. text side D_y: the ``text_top_k`` descriptors nearest the *predicted* class's text embedding;
7. MI(D_v, D_y), its removal curve and AUC (:mod:`.mutual_info`);
8. zero-shot accuracy with the discovered descriptors added to the class prompts.

Every encoder runs in the :class:`~analysis.cache.EmbeddingCache`: whole-image embeddings (prediction,
relevance filter) and patch tokens of the selected images come from one decode pass (read from the full
dataset's entries when an audit has already encoded them), text embeddings are shared with the other
pipelines, and visual-prompt embeddings are keyed by the model and a hash of the prompt pixels, so a re-run
decodes and encodes nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .._checks import ClipauditError, check_choice, check_positive_int
from ..cache import EmbeddingCache
from ..cache.kinds import input_size as _input_size
from ..cache.kinds import squash
from ..data import ImageDataset, load_templates
from ..ensemble import ensemble_weights
from ..models import ClipModel
from .clusters import CONCEPT_METHODS, concept_labels, label_maps
from .crf import CRFParams, refine_masks
from .descriptors import DescriptorPool
from .matching import assign_descriptors, relevance_order
from .mutual_info import MI_VARIANTS, auc_reference, auc_trapezoid, average_curves, removal_curve
from .spectral import FOREGROUND_METHODS, foreground_masks, upsample_masks
from .visual_prompts import concept_prompts

__all__ = [
    "ConceptConfig", "ClassConcepts", "ConceptsResult", "input_size", "grid_shape", "prepare_images",
    "segment_class", "select_images", "descriptor_sentence", "run_concepts",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConceptConfig:
    """Every knob of the pipeline; defaults are the reference notebook's values.

    Attributes
    ----------
    foreground : {"svd", "pca"}
        Graph decomposition (default) or PCA foreground.
    fg_component : int or None
        Foreground component (None: 1 for svd, 0 for pca).
    threshold_by_negative, fg_threshold : bool, float
        Foreground = score >= 0, or min-max scaled score >= ``fg_threshold``.
    min_second : int
        Keep the second-largest patch region when it has at least this many patches.
    use_crf : bool
        Refine the pixel foreground with the dense CRF.
    methods : tuple of {"pca", "kmeans"}
    n_parts : int
        Visual concepts per class.
    seed : int
        Seeds PCA solvers and K-means.
    top_k, mean_offset, per_concept, use_ot, sinkhorn_reg, sinkhorn_iter, scale
        Matching (see :func:`analysis.concepts.matching.assign_descriptors`).
    text_top_k : int
        Size of the text-side set D_y.
    mi_variant : {"released", "textbook"}
        MI definition (default "released": the numbers the paper reports).
    class_descriptors : int
        Most frequent discovered descriptors per class added to its prompts (accuracy table).
    thickness : int
        Ellipse line width.
    batch_size : int
        Encoder batch size for patch tokens and prompts.
    """

    foreground: str = "svd"
    fg_component: int | None = None
    threshold_by_negative: bool = True
    fg_threshold: float = 0.4
    min_second: int = 5
    use_crf: bool = True
    crf: CRFParams = field(default_factory=CRFParams)
    methods: tuple[str, ...] = CONCEPT_METHODS
    n_parts: int = 5
    seed: int = 0
    top_k: int = 500
    mean_offset: float = 0.02
    per_concept: int = 3
    use_ot: bool = True
    sinkhorn_reg: float = 1.0
    sinkhorn_iter: int = 1000
    scale: float = 2.5
    text_top_k: int = 50
    mi_variant: str = "released"
    class_descriptors: int = 5
    thickness: int = 1
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_choice("foreground", self.foreground, FOREGROUND_METHODS)
        for m in self.methods:
            check_choice("methods", m, CONCEPT_METHODS)
        check_choice("mi_variant", self.mi_variant, MI_VARIANTS)
        for name in ("n_parts", "top_k", "per_concept", "text_top_k", "batch_size", "sinkhorn_iter"):
            check_positive_int(name, getattr(self, name))


@dataclass
class ClassConcepts:
    """Segmentation of one class's images (pure output of :func:`segment_class`)."""

    grid: tuple[int, int]
    patch_foreground: np.ndarray  # (n, h, w) bool
    pixel_foreground: np.ndarray  # (n, H, W) bool (CRF-refined when enabled)
    patch_labels: dict[str, np.ndarray]  # method -> (n, h, w) int, -1 background
    pixel_labels: dict[str, np.ndarray]  # method -> (n, H, W) int, -1 background


@dataclass
class ConceptsResult:
    """Tables and summary of a run; ``figures`` holds per-class arrays for plotting (not written)."""

    metrics: dict[str, float]
    per_image: pd.DataFrame
    per_class: pd.DataFrame
    curves: pd.DataFrame
    info: dict[str, Any]
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- helpers
def input_size(model: ClipModel) -> tuple[int, int]:
    """(H, W) of the tensors the model's preprocess produces."""
    return _input_size(model)


def grid_shape(n_positions: int, size: tuple[int, int]) -> tuple[int, int]:
    """Patch grid (h, w) with ``h * w == n_positions`` and the aspect ratio of ``size = (H, W)``."""
    height, width = size
    h = max(1, round(math.sqrt(n_positions * height / width)))
    if n_positions % h:
        raise ClipauditError(f"Cannot lay {n_positions} patch tokens on a grid for an input of {size}.")
    return h, n_positions // h


def prepare_images(model: ClipModel, images: Sequence[Image.Image]) -> tuple[np.ndarray, torch.Tensor]:
    """Squash images to the model's input size (no crop); return uint8 RGB (n, H, W, 3) and model tensors.

    The pipeline gets both from :meth:`EmbeddingCache.pixels_and_tokens`; this is the same transform, for
    callers that hold PIL images.
    """
    size = input_size(model)
    arrays = np.stack([squash(im, size) for im in images])
    tensors = torch.stack([model.preprocess(Image.fromarray(a)) for a in arrays])
    return arrays, tensors


def select_images(dataset: ImageDataset, classes: Sequence[str] | None = None,
                  images_per_class: int = 50) -> dict[str, np.ndarray]:
    """Images :func:`run_concepts` processes: the first ``images_per_class`` of each class, by class name.

    Pass their union to :meth:`EmbeddingCache.image_views` as ``patch_indices`` to get their patch tokens
    from the same decode pass as the whole-image views.
    """
    check_positive_int("images_per_class", images_per_class)
    names = list(dataset.classnames)
    classes = list(names if classes is None else classes)
    for c in classes:
        check_choice("classes", c, names)
    labels = np.asarray(dataset.labels)
    selected = {c: np.flatnonzero(labels == names.index(c))[:images_per_class] for c in classes}
    empty = [c for c, idx in selected.items() if len(idx) == 0]
    if empty:
        raise ClipauditError(f"classes {empty} have no images in dataset {dataset.name!r}.")
    return selected


def segment_class(tokens: np.ndarray, grid: tuple[int, int], images: np.ndarray,
                  config: ConceptConfig = ConceptConfig()) -> ClassConcepts:
    """Foreground, CRF and concept label maps of one class (pure).

    Parameters
    ----------
    tokens : ndarray of shape (n_images, h*w, dim)
    grid : (h, w)
    images : ndarray of uint8, shape (n_images, H, W, 3)
    config : ConceptConfig
    """
    size = images.shape[1:3]
    patch_fg = foreground_masks(tokens, grid, method=config.foreground, component=config.fg_component,
                                by_negative=config.threshold_by_negative, threshold=config.fg_threshold,
                                min_second=config.min_second)
    pixel_fg = upsample_masks(patch_fg, size)
    if config.use_crf:
        pixel_fg = refine_masks(images, pixel_fg, config.crf)
    patch_labels, pixel_labels = {}, {}
    for method in config.methods:
        labels = concept_labels(tokens, patch_fg, method=method, n_parts=config.n_parts, random_state=config.seed)
        patch_labels[method] = labels
        pixel_labels[method] = label_maps(labels, size, pixel_fg)
    return ClassConcepts(tuple(grid), patch_fg, pixel_fg, patch_labels, pixel_labels)


def descriptor_sentence(classname: str, descriptor: str) -> str:
    """Menon & Vondrick's prompt: ``"{class}, which is {d}"`` for "a/an ..." descriptors, else "which has"."""
    verb = "is" if descriptor.split(" ", 1)[0].lower() in ("a", "an") else "has"
    return f"{classname}, which {verb} {descriptor}."


# ---------------------------------------------------------------------------------------------- the run
def run_concepts(model: ClipModel, dataset: ImageDataset, cache: EmbeddingCache, pool: DescriptorPool, *,
                 classes: Sequence[str] | None = None, images_per_class: int = 50,
                 templates: str = "openai_imagenet", config: ConceptConfig = ConceptConfig(),
                 figure_images: int = 4) -> ConceptsResult:
    """Run the pipeline on the first ``images_per_class`` images of each class in ``classes``.

    Parameters
    ----------
    model : ClipModel
    dataset : ImageDataset
        Labelled dataset.
    cache : EmbeddingCache
        Whole-image, class-prompt and descriptor embeddings come from here.
    pool : DescriptorPool
    classes : list of str, optional
        Class names (default: every class of the dataset).
    images_per_class : int, default=50
    templates : str, default="openai_imagenet"
        Prompt set of the zero-shot classifier (prediction, text side, accuracy table).
    config : ConceptConfig
    figure_images : int, default=4
        Images per class kept in ``ConceptsResult.figures``.

    Returns
    -------
    ConceptsResult
    """
    names = list(dataset.classnames)
    selected = select_images(dataset, classes, images_per_class)
    classes = list(selected)
    labels = np.asarray(dataset.labels)
    timings: Counter[str] = Counter()
    encoded_before = dict(cache.stats.encoded)

    all_idx = np.concatenate(list(selected.values()))
    position = {int(i): k for k, i in enumerate(all_idx)}
    chosen = dataset.subset(all_idx)

    t0 = time.perf_counter()
    # one decode per selected image: its whole-image embedding, squashed pixels and patch tokens
    feats = cache.image_views(model, chosen, ["none"], patch_indices=np.arange(len(chosen)))["none"]
    tset = load_templates(templates)
    per_template = cache.class_embeddings(model, names, tset)
    class_w = ensemble_weights(per_template)
    desc_emb = cache.text_features(model, list(pool.descriptors))
    timings["cache_embeddings"] += time.perf_counter() - t0
    preds = (feats.features @ class_w.T).argmax(axis=1)
    text_side = np.argsort(-(class_w @ desc_emb.T), axis=1, kind="stable")[:, : config.text_top_k]

    image_rows: list[dict[str, Any]] = []
    class_rows: list[dict[str, Any]] = []
    curve_rows: list[dict[str, Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    skipped = list(feats.skipped)
    discovered: dict[str, Counter[str]] = {}

    for cname in classes:
        t = time.perf_counter()
        rows = np.array([position[int(v)] for v in selected[cname]], dtype=np.int64)
        patches = cache.pixels_and_tokens(model, chosen, rows, batch_size=config.batch_size)
        keep = feats.valid[rows] & patches.valid  # unreadable images are listed in ``skipped`` already
        listed = {s["item"] for s in skipped}
        skipped += [{**s, "index": str(int(rows[int(s["index"])]))} for s in patches.skipped
                    if s["item"] not in listed]
        idx = [int(v) for v in all_idx[rows[keep]]]
        timings["patch_tokens"] += time.perf_counter() - t
        if not idx:
            continue
        arrays, tokens = patches.pixels[keep], patches.tokens[keep]
        grid = grid_shape(tokens.shape[1], arrays.shape[1:3])

        t = time.perf_counter()
        seg = segment_class(tokens, grid, arrays, config)
        timings["segmentation"] += time.perf_counter() - t

        curves: dict[str, list[np.ndarray]] = {m: [] for m in config.methods}
        discovered[cname] = Counter()
        fig_prompts: dict[str, list[np.ndarray]] = {m: [] for m in config.methods}
        # draw every prompt of the class first, then encode them in full batches (one pass per batch)
        t = time.perf_counter()
        drawn: dict[tuple[int, str], tuple[list[int], np.ndarray]] = {}
        for k in range(len(idx)):
            for method in config.methods:
                drawn[k, method] = concept_prompts(arrays[k], seg.pixel_labels[method][k],
                                                   thickness=config.thickness)
                if k < figure_images:
                    fig_prompts[method].append(drawn[k, method][1][:, 0])
        timings["prompts_draw"] += time.perf_counter() - t
        stacked = [p for _, p in drawn.values() if len(p)]
        t = time.perf_counter()
        all_emb = None
        if stacked:
            all_emb = cache.visual_prompts(model, np.concatenate(stacked), batch_size=config.batch_size)
        timings["prompts_encode"] += time.perf_counter() - t
        offset = 0
        for k, i in enumerate(idx):
            img_emb = feats.features[position[i]]
            pred = int(preds[position[i]])
            y = text_side[pred].tolist()
            for method in config.methods:
                concepts, prompts = drawn[k, method]
                concept_emb = np.zeros((0, desc_emb.shape[1]))
                if len(prompts):
                    concept_emb = all_emb[offset:offset + len(prompts)]
                    offset += len(prompts)
                t = time.perf_counter()
                assigned = assign_descriptors(
                    concept_emb, desc_emb, img_emb, top_k=config.top_k, mean_offset=config.mean_offset,
                    per_concept=config.per_concept, use_ot=config.use_ot, scale=config.scale,
                    reg=config.sinkhorn_reg, max_iter=config.sinkhorn_iter)
                d_v, scores = relevance_order(assigned, desc_emb, img_emb, scale=config.scale)
                curve = removal_curve(d_v, y, variant=config.mi_variant)
                timings["matching_mi"] += time.perf_counter() - t
                curves[method].append(curve)
                discovered[cname].update(pool.descriptors[j] for j in d_v)
                image_rows.append({
                    "index": i, "item": dataset.describe(i), "class": cname, "label": names.index(cname),
                    "pred": pred, "pred_name": names[pred], "correct": pred == names.index(cname),
                    "method": method, "foreground_fraction": float(seg.pixel_foreground[k].mean()),
                    "n_concepts": len(concepts), "concepts": [int(c) for c in concepts],
                    "assigned": " | ".join(f"{c}: " + "; ".join(pool.descriptors[j] for j in row)
                                           for c, row in zip(concepts, assigned, strict=True)),
                    "vision_descriptors": [pool.descriptors[j] for j in d_v],
                    "relevance": scores, "n_shared": len(set(d_v) & set(y)),
                    "mi": float(curve[0]), "auc_reference": auc_reference(curve),
                    "auc_trapezoid": auc_trapezoid(curve), "curve": curve.tolist(),
                })
        for method in config.methods:
            avg = average_curves(curves[method])
            per_img = [float(c[0]) for c in curves[method]]
            class_rows.append({
                "class": cname, "method": method, "n_images": len(idx),
                "mi": float(avg[0]) if avg.size else 0.0, "mi_image_mean": float(np.mean(per_img)),
                "auc_reference": auc_reference(avg), "auc_trapezoid": auc_trapezoid(avg), "curve": avg.tolist(),
                "foreground_fraction": float(seg.pixel_foreground.mean()),
                "top_descriptors": [d for d, _ in discovered[cname].most_common(config.class_descriptors)],
            })
            curve_rows += [{"class": cname, "method": method, "step": s, "mi": float(v)} for s, v in enumerate(avg)]
        n_fig = min(figure_images, len(idx))
        figures[cname] = {
            "items": [dataset.describe(i) for i in idx[:n_fig]], "images": arrays[:n_fig],
            "foreground": seg.pixel_foreground[:n_fig],
            "labels": {m: seg.pixel_labels[m][:n_fig] for m in config.methods},
            "prompts": {m: fig_prompts[m] for m in config.methods},
        }

    per_image = pd.DataFrame(image_rows)
    per_class = pd.DataFrame(class_rows)
    accuracy = _descriptor_accuracy(model, cache, tset, names, classes, discovered, feats.features,
                                    labels[all_idx], feats.valid, class_w, config)
    if not per_class.empty:
        per_class = per_class.merge(accuracy, on="class", how="left")
    metrics: dict[str, float] = {"n_classes": float(len(discovered)), "n_images": float(per_image["index"].nunique())
                                 if not per_image.empty else 0.0}
    for method in config.methods:
        sub = per_class[per_class["method"] == method] if not per_class.empty else per_class
        if len(sub):
            metrics[f"{method}_mi"] = float(sub["mi"].mean())
            metrics[f"{method}_auc_reference"] = float(sub["auc_reference"].mean())
            metrics[f"{method}_auc_trapezoid"] = float(sub["auc_trapezoid"].mean())
    if len(accuracy):
        n = accuracy["n_images"].sum()
        metrics["acc1_prompts"] = float((accuracy["acc1_prompts"] * accuracy["n_images"]).sum() / n)
        metrics["acc1_prompts_descriptors"] = float(
            (accuracy["acc1_prompts_descriptors"] * accuracy["n_images"]).sum() / n)
        metrics["acc1_gain"] = metrics["acc1_prompts_descriptors"] - metrics["acc1_prompts"]
    info = {
        "config": {k: (v.__dict__ if isinstance(v, CRFParams) else v) for k, v in config.__dict__.items()},
        "descriptor_pool": pool.name, "descriptor_pool_fingerprint": pool.fingerprint(),
        "n_descriptors": len(pool), "templates": tset.name, "images_per_class": images_per_class,
        "timings_s": dict(timings), "encoder_images": _encoded_since(cache, encoded_before),
    }
    curves_table = pd.DataFrame(curve_rows, columns=["class", "method", "step", "mi"])
    return ConceptsResult(metrics, per_image, per_class, curves_table, info, figures, skipped)


def _encoded_since(cache: EmbeddingCache, before: dict[str, int]) -> dict[str, int]:
    """Images through the encoder in this run: patch tokens, and prompt images (3 per concept)."""
    now = cache.stats.encoded
    out = {"patch_token_images": now.get("patch-tokens", 0) - before.get("patch-tokens", 0),
           "prompt_images": 3 * (now.get("visual-prompt", 0) - before.get("visual-prompt", 0))}
    return {k: v for k, v in out.items() if v}


def _descriptor_accuracy(model: ClipModel, cache: EmbeddingCache, tset: Any, names: list[str],
                         classes: list[str], discovered: dict[str, Counter[str]], features: np.ndarray,
                         labels: np.ndarray, valid: np.ndarray, class_w: np.ndarray,
                         config: ConceptConfig) -> pd.DataFrame:
    """Top-1 over the processed classes: class prompts vs class prompts + discovered descriptors.

    Both classifiers are restricted to the processed classes so the comparison is like for like. The
    augmented class embedding is the renormalised mean of the template embeddings and the embeddings of
    ``"{class}, which has {descriptor}."`` for the class's most frequent discovered descriptors.
    """
    done = [c for c in classes if c in discovered]
    if not done:
        return pd.DataFrame(columns=["class", "n_images", "acc1_prompts", "acc1_prompts_descriptors"])
    cols = [names.index(c) for c in done]
    base = class_w[cols]
    aug = []
    for c in done:
        top = [d for d, _ in discovered[c].most_common(config.class_descriptors)]
        prompts = tset.prompts([c])[0]
        emb = cache.text_features(model, prompts + [descriptor_sentence(c, d) for d in top])
        mean = emb.mean(axis=0)
        aug.append(mean / np.linalg.norm(mean))
    aug = np.stack(aug)
    slot = {col: k for k, col in enumerate(cols)}
    keep = valid & np.isin(labels, cols)
    x = features[keep]
    target = np.array([slot[int(v)] for v in labels[keep]], dtype=np.int64)
    pred_base = (x @ base.T).argmax(axis=1)
    pred_aug = (x @ aug.T).argmax(axis=1)
    rows = []
    for k, c in enumerate(done):
        m = target == k
        rows.append({"class": c, "n_images": int(m.sum()),
                     "acc1_prompts": float((pred_base[m] == k).mean()) if m.any() else float("nan"),
                     "acc1_prompts_descriptors": float((pred_aug[m] == k).mean()) if m.any() else float("nan")})
    return pd.DataFrame(rows)
