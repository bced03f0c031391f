"""WordNet hierarchy reranking (Ge et al., CVPR 2023, §4.2, Alg. 2, Eq. 3): pure functions over arrays.

For each image in the low-confidence set O, its top-k classes (k=5) of the name-only classifier are
re-scored. Candidate class c gets

.. math::

    \\mathrm{logit}'(x, c) = \\max_{m \\in \\{c\\} \\cup \\mathrm{children}(c)}
        \\cos\\big(f(x),\\ g(\\text{"{m} which is a kind of {p(c)}"})\\big)      \\qquad \\text{(Eq. 3)}

and the image is predicted as the candidate with the largest logit'. Images outside O keep their
base prediction. The text is the paper's (§5.2) with the space after "of" that the reference code drops.

Choices the paper leaves open (all options, defaults in :class:`HierarchyOptions`):

- children: direct hyponyms (then instance hyponyms) by increasing WordNet offset, first lemma;
  ``max_children`` caps them (None = all, as Eq. 3; the reference code takes the first 10 of ImageNet's
  is_a.txt order).
- parent p(c): the direct hypernym, first lemma (``parent_words="first-lemma"``, Fig. 5 style; the
  reference code uses the comma-joined synonym list: ``"all-lemmas"``). Multiple inheritance:
  ``parent_policy="first"`` (default: the hypernym with the lowest offset; nltk does not expose WordNet's
  own pointer order) or ``"all-max"`` (one text per parent,
  Eq. 3's max taken over all of them). The reference code keeps the *last* parent of ImageNet's is_a.txt.
- abstract nodes (``drop_abstract``): WordNet unique beginners (lexicographer file ``noun.Tops``) at most
  4 hypernym steps below ``entity``, e.g. physical entity, object, whole, artifact, matter, living thing,
  food, person; never used as a parent and never ranked for pruning.
- pruning (Suppl., not in the reference code): the candidate words of this dataset's hierarchy (all
  ancestors and children of its classes, not all of WordNet) are ranked by the variance over templates
  of the L2 norm of their *unnormalised* text embeddings; the top ``keep_fraction`` stay. p(c) becomes
  the nearest kept, non-abstract ancestor; pruned children are dropped (``prune_children``). When no
  ancestor qualifies, the direct parent is used anyway (``parent_fallback`` in the tables).
- unmapped classes (no synset) score with their bare name, i.e. their name-only logit.
- prompt ensembling (Tab. 4): each template is applied to the whole string and the normalised
  embeddings are averaged per string (:func:`member_embeddings`).

Everything is built as one flat list of texts (:func:`hierarchy_texts`), encoded once, and reranking
is a chunked matrix product plus ``np.maximum.reduceat`` over class groups: nothing is encoded per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score

from ._checks import ClipauditError, check_choice, check_fraction, check_positive_int
from .data.wordnet import ClassNode, WordNode
from .ensemble import ensemble_weights
from .metrics import top_k_indices

__all__ = [
    "HIERARCHY_TEMPLATE", "PARENT_POLICIES", "PARENT_WORDS", "HierarchyOptions", "HierarchyGroups",
    "HierarchyResult", "build_groups", "hierarchy_texts", "member_embeddings", "hierarchy_scores",
    "rerank_topk", "rerank_summary", "pruning_words", "pruning_texts", "norm_variance", "keep_top_fraction",
    "prune", "run_hierarchy", "map_dataset_classes", "rerank",
]

#: The paper's c~ string (§5.2), with the space after "of".
HIERARCHY_TEMPLATE = "{child} which is a kind of {parent}"
PARENT_POLICIES = ("first", "all-max")
PARENT_WORDS = ("first-lemma", "all-lemmas")

Encoder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class HierarchyOptions:
    """Options of the method; defaults are the paper's where it states one.

    Parameters
    ----------
    top_k : int, default=5
        Candidates reranked per image (paper: top-5 of the name-only classifier).
    max_children : int or None, default=None
        Children per class (None = all, Eq. 3; reference code: 10).
    parent_policy : {"first", "all-max"}, default="first"
    parent_words : {"first-lemma", "all-lemmas"}, default="first-lemma"
    drop_abstract : bool, default=True
    keep_fraction : float or None, default=0.4
        Fraction of hierarchy words kept by norm-variance pruning (Suppl.: 40%; Tab. 7 also 0.3).
        None or 1.0: no pruning (nothing extra is encoded).
    prune_children : bool, default=True
        Pruning removes children too (the pruned nodes are gone from the tree), not just parents.
    """

    top_k: int = 5
    max_children: int | None = None
    parent_policy: str = "first"
    parent_words: str = "first-lemma"
    drop_abstract: bool = True
    keep_fraction: float | None = 0.4
    prune_children: bool = True

    def __post_init__(self) -> None:
        check_positive_int("top_k", self.top_k)
        mc = self.max_children
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 0):
            raise ClipauditError(f"max_children must be None (all) or an integer >= 0, got {mc!r}.")
        check_choice("parent_policy", self.parent_policy, PARENT_POLICIES)
        check_choice("parent_words", self.parent_words, PARENT_WORDS)
        if self.keep_fraction is not None:
            check_fraction("keep_fraction", self.keep_fraction)

    @property
    def prunes(self) -> bool:
        return self.keep_fraction is not None and self.keep_fraction < 1.0


# --------------------------------------------------------------------------------------------- groups
@dataclass(frozen=True)
class HierarchyGroups:
    """The strings of Eq. 3, grouped by class (members of one class are contiguous, classes in order).

    Attributes
    ----------
    text : list of str, length n_members
        ``"{member} which is a kind of {parent}"`` (or the bare class name for an unmapped class).
    member_class : ndarray of shape (n_members,)
    kind : list of str
        "self", "child" or "name" (unmapped class).
    parents : list of list of str
        Parent word(s) used per class; empty for unmapped classes.
    n_children : ndarray of shape (n_classes,)
        Children used per class (after the cap and pruning).
    parent_fallback : ndarray of shape (n_classes,) of bool
        True when no ancestor survived pruning/abstract removal and the direct parent was used.
    """

    text: list[str]
    member_class: np.ndarray
    kind: list[str]
    parents: list[list[str]]
    n_children: np.ndarray
    parent_fallback: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.parents)

    @property
    def offsets(self) -> np.ndarray:
        """Index of each class's first member (for ``np.maximum.reduceat``)."""
        return np.searchsorted(self.member_class, np.arange(self.n_classes))


def _word(node: WordNode, parent_words: str) -> str:
    return node.name if parent_words == "first-lemma" else ", ".join(node.lemmas)


def _pick_parent(chain: Sequence[WordNode], keep: set[str] | None, drop_abstract: bool) -> WordNode | None:
    for node in chain:
        if drop_abstract and node.abstract:
            continue
        if keep is None or node.wnid in keep:
            return node
    return None


def build_groups(nodes: Sequence[ClassNode], options: HierarchyOptions = HierarchyOptions(), *,
                 keep: set[str] | None = None) -> HierarchyGroups:
    """Eq. 3's groups: per class, ``[c; p(c)]`` then ``[child_j; p(c)]`` for each kept child.

    Parameters
    ----------
    nodes : list of ClassNode
        One per class, in class-index order (:func:`analysis.data.wordnet.class_nodes`).
    options : HierarchyOptions
    keep : set of str, optional
        WordNet ids that survive pruning (None: no pruning).
    """
    if not nodes:
        raise ClipauditError("No classes: the hierarchy needs at least one class.")
    text: list[str] = []
    member_class: list[int] = []
    kind: list[str] = []
    parents_out: list[list[str]] = []
    n_children = np.zeros(len(nodes), np.int64)
    fallback = np.zeros(len(nodes), bool)
    for ci, node in enumerate(nodes):
        if node.wnid is None or not node.parent_chains:
            text.append(node.classname)
            member_class.append(ci)
            kind.append("name")
            parents_out.append([])
            continue
        chains = node.parent_chains if options.parent_policy == "all-max" else node.parent_chains[:1]
        picked: list[str] = []
        for chain in chains:
            p = _pick_parent(chain, keep, options.drop_abstract)
            if p is None:
                p, fallback[ci] = chain[0], True
            word = _word(p, options.parent_words)
            if word not in picked:
                picked.append(word)
        children = [ch for ch in node.children
                    if not (options.drop_abstract and ch.abstract)
                    and (keep is None or not options.prune_children or ch.wnid in keep)]
        if options.max_children is not None:
            children = children[:options.max_children]
        n_children[ci] = len(children)
        members = [(node.classname, "self")] + [(ch.name, "child") for ch in children]
        for parent in picked:
            for word, k in members:
                text.append(HIERARCHY_TEMPLATE.format(child=word, parent=parent))
                member_class.append(ci)
                kind.append(k)
        parents_out.append(picked)
    return HierarchyGroups(text, np.asarray(member_class, np.int64), kind, parents_out, n_children, fallback)


def hierarchy_texts(groups: HierarchyGroups, templates: Sequence[str] = ("{}",)) -> list[str]:
    """Flat list of every text to encode, member-major: ``templates[t]`` applied to member ``m`` is
    item ``m * len(templates) + t`` (the template's ``{}`` is replaced by the whole c~ string)."""
    if not templates:
        raise ClipauditError("templates is empty: give at least '{}'.")
    return [t.replace("{}", s) for s in groups.text for t in templates]


def member_embeddings(text_features: np.ndarray, n_templates: int) -> np.ndarray:
    """(n_members * n_templates, D) normalised text embeddings -> (n_members, D) prompt-ensembled weights."""
    feats = np.asarray(text_features, np.float32)
    if feats.ndim != 2 or feats.shape[0] % n_templates:
        raise ClipauditError(f"text_features of shape {feats.shape} does not hold {n_templates} templates "
                             f"per member.")
    per_template = feats.reshape(-1, n_templates, feats.shape[1]).transpose(1, 0, 2)
    return ensemble_weights(per_template)


def hierarchy_scores(image_features: np.ndarray, weights: np.ndarray, member_class: np.ndarray,
                     n_classes: int, *, chunk: int = 4096) -> np.ndarray:
    """Eq. 3 for every class: ``H[i, c] = max_{m in group(c)} <x_i, w_m>``, shape (n_images, n_classes).

    ``member_class`` must be sorted with every class present (as :func:`build_groups` makes it).
    """
    member_class = np.asarray(member_class)
    if len(member_class) != len(weights):
        raise ClipauditError(f"{len(weights)} member weights but {len(member_class)} member classes.")
    if np.any(np.diff(member_class) < 0) or not np.array_equal(np.unique(member_class), np.arange(n_classes)):
        raise ClipauditError("member_class must be sorted and cover every class 0..n_classes-1.")
    offsets = np.searchsorted(member_class, np.arange(n_classes))
    x = np.asarray(image_features, np.float32)
    w = np.asarray(weights, np.float32)
    out = np.empty((len(x), n_classes), np.float32)
    for s in range(0, len(x), chunk):
        out[s:s + chunk] = np.maximum.reduceat(x[s:s + chunk] @ w.T, offsets, axis=1)
    return out


def rerank_topk(base_logits: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None, *, k: int = 5,
                candidate_logits: np.ndarray | None = None) -> np.ndarray:
    """Predictions after reranking: inside ``mask``, the top-``k`` class of ``candidate_logits``
    (default ``base_logits``) with the largest ``scores``; elsewhere ``argmax(base_logits)``.

    Parameters
    ----------
    base_logits : ndarray of shape (n_images, n_classes)
    scores : ndarray of shape (n_images, n_classes) or (mask.sum(), n_classes)
        Hierarchy scores (:func:`hierarchy_scores`), for all images or only the masked ones.
    mask : ndarray of shape (n_images,) of bool, optional
        The low-confidence set O (None: every image).
    k : int, default=5
    candidate_logits : ndarray of shape (n_images, n_classes), optional
        Where the top-k come from (default: ``base_logits``).

    Ties in ``scores`` go to the candidate ranked higher by ``candidate_logits``.
    """
    base = np.asarray(base_logits)
    n, c = base.shape
    mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != (n,):
        raise ClipauditError(f"mask has shape {mask.shape}; expected ({n},) for {n} images.")
    cand = base if candidate_logits is None else np.asarray(candidate_logits)
    if cand.shape != base.shape:
        raise ClipauditError(f"candidate_logits has shape {cand.shape}; base_logits has {base.shape}.")
    scores = np.asarray(scores)
    if scores.shape[0] == n and scores.shape[0] != mask.sum():
        scores = scores[mask]
    if scores.shape != (int(mask.sum()), c):
        raise ClipauditError(f"scores has shape {scores.shape}; expected ({n}, {c}) or "
                             f"({int(mask.sum())}, {c}).")
    k = min(check_positive_int("k", k), c)
    pred = base.argmax(1)
    if mask.any():
        top = top_k_indices(cand[mask], k)  # the one stable top-k order
        best = np.take_along_axis(scores, top, axis=1).argmax(1)
        pred[mask] = top[np.arange(len(top)), best]
    return pred


def _acc(labels: np.ndarray, pred: np.ndarray) -> float:
    return float(accuracy_score(labels, pred)) if len(labels) else float("nan")


def rerank_summary(labels: np.ndarray, before: np.ndarray, after: np.ndarray, mask: np.ndarray,
                   classnames: Sequence[str], *, topk_hit: np.ndarray | None = None) -> tuple[dict[str, Any],
                                                                                               pd.DataFrame]:
    """Tab. 1 columns and the per-class table.

    Accuracy before/after on the full set, on O (``low``) and on its complement (``high``); changed
    predictions split into fixed (wrong -> right), broken (right -> wrong) and other (wrong -> wrong).
    Unlabelled images (label -1) are left out of every count.
    """
    labels, before, after = np.asarray(labels), np.asarray(before), np.asarray(after)
    mask = np.asarray(mask, bool)
    ok = labels >= 0
    labels, before, after, mask = labels[ok], before[ok], after[ok], mask[ok]
    right0, right1 = before == labels, after == labels
    changed = before != after
    metrics: dict[str, Any] = {
        "n": int(len(labels)), "n_low": int(mask.sum()),
        "low_fraction": float(mask.mean()) if len(mask) else 0.0,
        "acc1_before": _acc(labels, before), "acc1_after": _acc(labels, after),
        "acc1_low_before": _acc(labels[mask], before[mask]),
        "acc1_low_after": _acc(labels[mask], after[mask]),
        "acc1_high_before": _acc(labels[~mask], before[~mask]),
        "acc1_high_after": _acc(labels[~mask], after[~mask]),
        "n_changed": int(changed.sum()), "n_fixed": int((~right0 & right1).sum()),
        "n_broken": int((right0 & ~right1).sum()),
        "n_changed_wrong_to_wrong": int((changed & ~right0 & ~right1).sum()),
    }
    if topk_hit is not None:
        hit = np.asarray(topk_hit, bool)[ok]
        metrics["topk_low_upper_bound"] = float(hit[mask].mean()) if mask.any() else float("nan")
    rows = []
    for ci, name in enumerate(classnames):
        sel = labels == ci
        rows.append({
            "class": ci, "classname": name, "n": int(sel.sum()), "n_low": int((sel & mask).sum()),
            "acc1_before": _acc(labels[sel], before[sel]), "acc1_after": _acc(labels[sel], after[sel]),
            "acc1_low_before": _acc(labels[sel & mask], before[sel & mask]),
            "acc1_low_after": _acc(labels[sel & mask], after[sel & mask]),
            "fixed": int((sel & ~right0 & right1).sum()), "broken": int((sel & right0 & ~right1).sum()),
        })
    return metrics, pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- pruning
def pruning_words(nodes: Sequence[ClassNode], *, drop_abstract: bool = True,
                  include_children: bool = True) -> list[WordNode]:
    """The words ranked for pruning: every ancestor (all chains) and child of the classes, once each,
    in order of first appearance; abstract nodes left out when ``drop_abstract``."""
    seen: dict[str, WordNode] = {}
    for node in nodes:
        words = [w for chain in node.parent_chains for w in chain]
        if include_children:
            words += list(node.children)
        for w in words:
            if not (drop_abstract and w.abstract):
                seen.setdefault(w.wnid, w)
    return list(seen.values())


def pruning_texts(words: Sequence[WordNode], templates: Sequence[str]) -> list[str]:
    """Word-major texts ``templates[t]`` with the word's first lemma: item ``w * len(templates) + t``."""
    return [t.replace("{}", w.name) for w in words for t in templates]


def norm_variance(raw_embeddings: np.ndarray, n_templates: int) -> np.ndarray:
    """Variance over templates of the L2 norm of unnormalised embeddings: (W*T, D) -> (W,).

    Rare words ('anthozoan') have small variance, common words ('workplace') large (Suppl.).
    """
    raw = np.asarray(raw_embeddings, np.float64)
    if raw.ndim != 2 or raw.shape[0] % n_templates:
        raise ClipauditError(f"raw_embeddings of shape {raw.shape} does not hold {n_templates} templates "
                             f"per word.")
    norms = np.linalg.norm(raw, axis=1).reshape(-1, n_templates)
    return norms.var(axis=1)


def keep_top_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``ceil(fraction * n)`` highest scores (ties: earlier item first)."""
    fraction = check_fraction("keep_fraction", fraction)
    scores = np.asarray(scores, np.float64)
    n_keep = math.ceil(fraction * len(scores) - 1e-9)
    keep = np.zeros(len(scores), bool)
    keep[np.argsort(-scores, kind="stable")[:n_keep]] = True
    return keep


def prune(words: Sequence[WordNode], raw_embeddings: np.ndarray, n_templates: int,
          fraction: float) -> tuple[set[str], pd.DataFrame]:
    """Kept WordNet ids and a table (wnid, word, variance, rank, kept), most common word first."""
    var = norm_variance(raw_embeddings, n_templates)
    if len(var) != len(words):
        raise ClipauditError(f"{len(var)} variances for {len(words)} words.")
    keep = keep_top_fraction(var, fraction)
    table = pd.DataFrame({"wnid": [w.wnid for w in words], "word": [w.name for w in words],
                          "variance": var, "kept": keep})
    table["rank"] = table["variance"].rank(ascending=False, method="first").astype(int)
    return {w.wnid for w, k in zip(words, keep) if k}, table.sort_values("rank").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- pipeline
@dataclass
class HierarchyResult:
    """What :func:`run_hierarchy` returns: metrics (Tab. 1 columns), tables and run info."""

    metrics: dict[str, Any]
    per_class: pd.DataFrame
    predictions: pd.DataFrame
    pruning: pd.DataFrame | None
    info: dict[str, Any] = field(default_factory=dict)


def run_hierarchy(image_features: np.ndarray, labels: np.ndarray, base_logits: np.ndarray,
                  nodes: Sequence[ClassNode], encode: Encoder, *, mask: np.ndarray | None = None,
                  options: HierarchyOptions = HierarchyOptions(), templates: Sequence[str] = ("{}",),
                  candidate_logits: np.ndarray | None = None, encode_raw: Encoder | None = None,
                  prune_templates: Sequence[str] | None = None) -> HierarchyResult:
    """Rerank the low-confidence images and score the result.

    Parameters
    ----------
    image_features : ndarray of shape (n_images, dim)
        L2-normalised image embeddings.
    labels : ndarray of shape (n_images,)
        Class indices (-1 = unlabelled).
    base_logits : ndarray of shape (n_images, n_classes)
        The classifier being improved (name-only; or the prompt ensemble for Tab. 4's variant). Images
        outside ``mask`` keep its top-1.
    nodes : list of ClassNode, length n_classes
    encode : callable
        list of texts -> (n_texts, dim) L2-normalised embeddings (e.g. ``EmbeddingCache.text_features``);
        called once, with every text of every class.
    mask : ndarray of shape (n_images,) of bool, optional
        Low-confidence set O (None: all images).
    options : HierarchyOptions
    templates : list of str, default=("{}",)
        Templates applied to each whole c~ string and ensembled (("{}",) = the paper's main setting).
    candidate_logits : ndarray, optional
        Source of the top-k candidates (default ``base_logits``).
    encode_raw : callable, optional
        list of texts -> unnormalised embeddings; needed when ``options`` prunes.
    prune_templates : list of str, optional
        Templates whose norm variance ranks the words (default: ``templates``; the paper's are the 80
        CLIP templates).
    """
    base = np.asarray(base_logits, np.float32)
    n, c = base.shape
    if len(nodes) != c:
        raise ClipauditError(f"{len(nodes)} class nodes but base_logits has {c} classes.")
    if len(image_features) != n or len(labels) != n:
        raise ClipauditError(f"image_features ({len(image_features)}), labels ({len(labels)}) and "
                             f"base_logits ({n}) must have one row per image.")
    mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
    keep, pruning = None, None
    if options.prunes:
        if encode_raw is None:
            raise ClipauditError("keep_fraction < 1 prunes WordNet and needs encode_raw (unnormalised text "
                                 "embeddings); pass keep_fraction=None to skip pruning.")
        ptemplates = list(prune_templates or templates)
        words = pruning_words(nodes, drop_abstract=options.drop_abstract,
                              include_children=options.prune_children)
        if words:
            keep, pruning = prune(words, encode_raw(pruning_texts(words, ptemplates)), len(ptemplates),
                                  options.keep_fraction)  # type: ignore[arg-type]
    groups = build_groups(nodes, options, keep=keep)
    texts = hierarchy_texts(groups, templates)
    weights = member_embeddings(encode(texts), len(templates))
    scores = hierarchy_scores(np.asarray(image_features, np.float32)[mask], weights, groups.member_class, c)
    after = rerank_topk(base, scores, mask, k=options.top_k, candidate_logits=candidate_logits)
    before = base.argmax(1)
    cand = base if candidate_logits is None else np.asarray(candidate_logits)
    k = min(options.top_k, c)
    lab = np.asarray(labels)
    topk = top_k_indices(cand, k)
    hit = (topk == lab[:, None]).any(1)
    names = [nd.classname for nd in nodes]
    metrics, per_class = rerank_summary(lab, before, after, mask, names, topk_hit=hit)
    per_class.insert(2, "wnid", [nd.wnid for nd in nodes])
    per_class.insert(3, "parents", [" | ".join(p) for p in groups.parents])
    per_class.insert(4, "n_children", groups.n_children)
    per_class.insert(5, "parent_fallback", groups.parent_fallback)
    predictions = pd.DataFrame({"index": np.arange(n), "label": lab, "low_confidence": mask,
                                "pred_before": before, "pred_after": after, "changed": before != after})
    info = {
        "n_texts": len(texts), "n_members": len(groups.text), "n_templates": len(templates),
        "n_unmapped_classes": int(sum(nd.wnid is None for nd in nodes)),
        "n_parent_fallback": int(groups.parent_fallback.sum()),
        "n_pruning_words": 0 if pruning is None else len(pruning),
        "n_pruning_kept": 0 if keep is None else len(keep),
        "options": {**options.__dict__}, "template": HIERARCHY_TEMPLATE,
    }
    return HierarchyResult(metrics, per_class, predictions, pruning, info)


# --------------------------------------------------------------------------------------------- wiring
VARIANTS = ("name-only", "ensemble")
CANDIDATES = ("name-only", "base")
CLASS_MAPS = ("auto", "imagenet1k", "lemma")


def map_dataset_classes(wn: Any, classnames: Sequence[str], dataset_name: str, *, class_map: str = "auto",
                        overrides: str | None = None, ambiguous: str = "first") -> tuple[Any, list[ClassNode], str]:
    """Map ``classnames`` to WordNet: (ClassMapping, ClassNodes, mapping source).

    ``class_map``: ``imagenet1k`` (class i is ImageNet-1k wnid i), ``lemma`` (override file, then noun lookup)
    or ``auto`` (imagenet1k when the classes are open_clip's 1000 ImageNet names). ``overrides`` defaults to
    ``prompts/wordnet_overrides/<dataset>.json`` when it exists (lemma mapping only).
    """
    from .data import wordnet as w

    check_choice("class_map", class_map, CLASS_MAPS)
    wnids = None
    kind = class_map
    if kind == "auto":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        kind = "imagenet1k" if list(classnames) == list(IMAGENET_CLASSNAMES) else "lemma"
    if kind == "imagenet1k":
        if len(classnames) != 1000:
            raise ClipauditError(f"--class-map imagenet1k needs the 1000 ImageNet-1k classes; the dataset has "
                                 f"{len(classnames)}.")
        wnids = w.imagenet_wnids()
    path = overrides or (w.find_override_file(dataset_name) if kind == "lemma" else None)
    loaded = w.load_overrides(path) if path else None
    mapping = w.map_classes(wn, list(classnames), wnids=wnids, overrides=loaded,
                            override_source=str(path) if path else "overrides", ambiguous=ambiguous)
    return mapping, w.class_nodes(list(classnames), mapping.synsets), str(path) if path else kind


def rerank(state: Any, nodes: Sequence[ClassNode], encode: Encoder, encode_raw: Encoder | None = None, *,
           mask: np.ndarray | None = None, options: HierarchyOptions = HierarchyOptions(),
           variant: str = "name-only", candidates: str = "name-only", templates: Any = None,
           prune_templates: Any = None) -> HierarchyResult:
    """Hierarchy reranking on a :class:`~analysis.classifier.ClassifierState` (no model, no cache: pure).

    Parameters
    ----------
    state : ClassifierState
        Image features, labels and the name-only / ensemble logits of the run.
    nodes : list of ClassNode
        The classes mapped to WordNet (:func:`map_dataset_classes`).
    encode, encode_raw : callable
        list of texts -> L2-normalised / unnormalised embeddings (the run's cache).
    mask : ndarray of shape (n,) of bool, optional
        Rows of ``state`` to rerank (the low-confidence set O); None reranks every image.
    options : HierarchyOptions
    variant : {"name-only", "ensemble"}
        Base classifier and hierarchy texts use ``"{}"`` (Tab. 1) or ``templates`` averaged (Tab. 4).
    candidates : {"name-only", "base"}
        Source of the top-k candidates: the name-only classifier (paper) or the base classifier.
    templates, prune_templates : TemplateSet
        The run's prompt set, and the one whose norm variance ranks words (default: ``templates``).

    Returns
    -------
    HierarchyResult
        ``predictions["index"]`` holds dataset indices (``state.index``).
    """
    check_choice("variant", variant, VARIANTS)
    check_choice("candidates", candidates, CANDIDATES)
    name_only = state.name_only_logits
    if variant == "ensemble":
        base, texts = state.logits, list(templates.templates)
    else:
        base, texts = name_only, ["{}"]
    cand = name_only if candidates == "name-only" else base
    prune_list = list((prune_templates or templates).templates) if (prune_templates or templates) else None
    result = run_hierarchy(state.features, state.labels, base, nodes, encode, mask=mask, options=options,
                           templates=texts, candidate_logits=cand, encode_raw=encode_raw,
                           prune_templates=prune_list)
    result.predictions["index"] = state.index
    return result
