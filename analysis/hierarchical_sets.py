"""Hierarchical answers from conformal prediction sets: "answer the ancestor when unsure".

A split-conformal set (:func:`analysis.conformal.prediction_sets`) with one class is answered with that
class. A set with several classes is answered with their **lowest common WordNet hypernym**: the deepest
synset that is a hypernym (or instance hypernym, or the synset itself) of every class of the set. For two
classes this is exactly nltk's ``a.lowest_common_hypernyms(b)[0]`` (deepest by ``max_depth()``, ties
broken by synset name). For more classes, the hypernyms common to the whole set (the intersection of the
classes' hypernym closures, the sets nltk's ``common_hypernyms`` intersects pairwise) are ranked by the same
rule. This is order-independent, unlike folding ``lowest_common_hypernyms`` pairwise, which under WordNet's
multiple inheritance can depend on the order and overshoot: for {computer keyboard, printer, crane (the
machine)} one order gives "device", another "instrumentality". Both are common hypernyms of every class of
the set, so the argument below holds for either.

An answer is **correct** when it is true of the image: a single class when it is the label; an ancestor
when it lies on one of the true class's hypernym paths (the true synset is the ancestor or one of its
hyponyms). Whenever the true class is in the set and every class of the set has a synset, the ancestor is
a hypernym of the true class, so the answer is correct: the hierarchical coverage is **at least** the set's
coverage, and the conformal guarantee ``P(Y in C(X)) >= 1 - alpha`` carries over. It can be larger: a set
``{cat, car}`` that misses a dog is answered "whole, unit", which a dog also is. The summary reports both
and the difference (``coverage_gain``).

Sets that hold a class without a synset cannot be answered by a WordNet node (``kind="unmapped"``,
``answer=None``, never correct); an empty set has no answer (``kind="empty"``). The ancestor of a set may be
the synset of one of its classes ({T-shirt, shirt} -> "shirt"): it is still an ancestor answer, judged by
hypernymy (a T-shirt is a shirt), not by the label.

The functions take the set mask and labels as arrays and the class synsets as nltk ``Synset`` objects
(or names resolved through the ``wordnet`` reader passed in); nothing else is read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ._checks import ClipauditError, check_positive_int

__all__ = ["KINDS", "SUMMARY_DEFINITIONS", "HierarchicalAnswers", "lowest_common_hypernym", "hierarchical_answers"]

#: Values of the ``kind`` column.
KINDS: tuple[str, ...] = ("class", "ancestor", "unmapped", "empty")

#: One-line definition of each summary key (for a report glossary).
SUMMARY_DEFINITIONS: dict[str, str] = {
    "n": "images answered",
    "coverage": "fraction of images whose answer (class or ancestor) is true of the image",
    "set_coverage": "fraction of images whose prediction set holds the true class",
    "coverage_gain": "fraction of images whose set misses the true class but whose ancestor answer is still true",
    "class_fraction": "fraction of images answered with a single class (sets of one class)",
    "ancestor_fraction": "fraction of images answered with a WordNet ancestor (sets of several mapped classes)",
    "unmapped_fraction": "fraction of images whose set holds a class without a WordNet synset (no answer)",
    "empty_fraction": "fraction of images with an empty set (no answer)",
    "mean_answer_depth": "mean WordNet depth (min_depth) of the answers, classes and ancestors together",
    "mean_ancestor_depth": "mean WordNet depth of the ancestor answers",
    "mean_set_class_depth": "mean WordNet depth of the classes inside the sets answered by an ancestor",
    "mean_depth_drop": "mean number of levels an ancestor answer lies above the mean depth of its set's classes",
    "mean_class_depth": "mean WordNet depth of the mapped classes of the label space",
    "top_ancestors": "most common ancestor answers with their counts",
}


class HierarchicalAnswers(NamedTuple):
    """Per-image answers and their summary (unpacks as ``table, summary = hierarchical_answers(...)``)."""

    table: pd.DataFrame
    summary: dict[str, Any]


def _hypers(synset: Any) -> list[Any]:
    return synset.hypernyms() + synset.instance_hypernyms()


class _Lattice:
    """Hypernym closures and lowest common hypernyms of synsets, cached; sets are keyed by synset name (Python
    hashes nltk synsets by name in Python code, ten times slower than hashing the name itself)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}
        self.up: dict[str, frozenset[str]] = {}

    def closure(self, synset: Any) -> frozenset[str]:
        """Names of the synset and of all its hypernyms and instance hypernyms (nltk's ``_iter_hypernym_lists``)."""
        name = synset.name()
        if name not in self.up:
            nodes = [synset, *synset.closure(_hypers)]
            self.nodes.update((s.name(), s) for s in nodes)
            self.up[name] = frozenset(s.name() for s in nodes)
        return self.up[name]

    def lowest(self, synsets: Sequence[Any]) -> Any:
        common = frozenset.intersection(*(self.closure(s) for s in synsets))
        if not common:
            return None
        # nltk's rule: greatest max_depth(), then the smallest name (nltk sorts the ties and we take the first)
        return self.nodes[min(common, key=lambda n: (-self.nodes[n].max_depth(), n))]


def lowest_common_hypernym(synsets: Sequence[Any]) -> Any:
    """The deepest synset that is a hypernym (or the synset itself) of every synset given.

    Parameters
    ----------
    synsets : sequence of nltk Synset
        At least one.

    Returns
    -------
    nltk Synset or None
        For one synset, itself; for two, ``a.lowest_common_hypernyms(b)[0]``; for more, by the same rule
        applied to the hypernyms common to all (the greatest ``max_depth()``, ties by name). None when they
        share none (nouns always share ``entity.n.01``).
    """
    if not len(synsets):
        raise ClipauditError("lowest_common_hypernym needs at least one synset, got none.")
    return _Lattice().lowest(synsets)


def _check_sets(sets: Any) -> np.ndarray:
    m = np.asarray(sets)
    if m.ndim != 2 or m.shape[1] == 0:
        raise ClipauditError(f"sets must be a 2-D boolean mask (n_images, n_classes), got shape {m.shape}.")
    if m.dtype != bool:
        if m.size and not np.all(np.isin(m, (0, 1))):
            raise ClipauditError("sets must be boolean (or 0/1): sets[i, c] says class c is in the set of image i.")
        m = m.astype(bool)
    return m


def _check_labels(labels: Any, n: int, n_classes: int) -> np.ndarray | None:
    if labels is None:
        return None
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ClipauditError(f"labels must have shape ({n},) to match the sets; got {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
            raise ClipauditError(f"labels must be class indices (integers), got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ClipauditError(f"labels must lie in [0, {n_classes - 1}]; got range [{y.min()}, {y.max()}]. "
                             "Pass labels=None for unlabelled images.")
    return y


def _resolve(synsets: Sequence[Any], n_classes: int, wordnet: Any, classnames: Sequence[str] | None) -> list[Any]:
    if isinstance(synsets, (str, bytes)) or len(synsets) != n_classes:
        got = "a string" if isinstance(synsets, (str, bytes)) else f"{len(synsets)} entries"
        raise ClipauditError(f"synsets must hold one synset (or None) per class: {n_classes} expected, got {got}.")
    out: list[Any] = []
    for c, s in enumerate(synsets):
        if s is None or (isinstance(s, float) and np.isnan(s)):
            out.append(None)
        elif isinstance(s, str):
            if wordnet is None:
                from .data.wordnet import load_wordnet

                wordnet = load_wordnet()
            from .data.wordnet import resolve_synset

            name = str(classnames[c]) if classnames is not None else f"class {c}"
            out.append(resolve_synset(wordnet, s, classname=name, source="synsets"))
        elif callable(getattr(s, "common_hypernyms", None)) and callable(getattr(s, "min_depth", None)):
            out.append(s)
        else:
            raise ClipauditError(f"synsets[{c}] must be an nltk Synset, a synset name ('dog.n.01'), a WordNet id "
                                 f"('n02084071') or None; got {type(s).__name__}.")
    return out


def _name(synset: Any) -> str:
    return synset.lemma_names()[0].replace("_", " ")


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def hierarchical_answers(sets: Any, labels: Any, synsets: Sequence[Any], *, wordnet: Any = None,
                         classnames: Sequence[str] | None = None, top: int = 5) -> HierarchicalAnswers:
    """Answer each prediction set with its class, or with the lowest common WordNet hypernym of its classes.

    Parameters
    ----------
    sets : array-like of bool, shape (n_images, n_classes)
        Conformal prediction sets (:func:`analysis.conformal.prediction_sets`).
    labels : array-like of int, shape (n_images,), or None
        True class indices; None for unlabelled images (``correct`` and the coverages are then None).
    synsets : sequence, length n_classes
        Per class an nltk ``Synset``, a synset name or WordNet id, or None (unmapped), e.g.
        ``mapping.synsets`` of :func:`analysis.hierarchy.map_dataset_classes`.
    wordnet : nltk WordNetCorpusReader, optional
        Resolves names in ``synsets`` (default: :func:`analysis.data.wordnet.load_wordnet`, loaded only when a
        name is given).
    classnames : sequence of str, optional
        Readable names of single-class answers (default: the first lemma of the class's synset).
    top : int, default=5
        How many of the most common ancestors ``summary["top_ancestors"]`` lists.

    Returns
    -------
    HierarchicalAnswers
        ``table``: one row per image, columns

        - ``size`` (int): classes in the set;
        - ``kind``: ``"class"`` (one class), ``"ancestor"`` (several mapped classes), ``"unmapped"`` (several
          classes, one without a synset: no answer) or ``"empty"``;
        - ``answer`` (str or None): the class index as a string for ``"class"``, the ancestor's synset name
          (``'carnivore.n.01'``) for ``"ancestor"``, None otherwise;
        - ``answer_name`` (str): readable answer (class name, ancestor's first lemma, ``"(unmapped)"``,
          ``"(empty set)"``);
        - ``synset`` (str or None): synset name of the answer (the class's own synset for ``"class"``);
        - ``is_class`` (bool): ``kind == "class"``;
        - ``depth`` (nullable Int64): ``min_depth()`` of the answer's synset, NA without one;
        - ``correct`` (nullable boolean): ``"class"``: the label is the class; ``"ancestor"``: the answer is
          on a hypernym path of the true class's synset; ``"unmapped"``/``"empty"``: False. NA when
          ``labels`` is None.

        ``summary``: the keys of :data:`SUMMARY_DEFINITIONS`; means over no rows are None (never NaN);
        ``top_ancestors`` is a list of ``{"answer", "answer_name", "depth", "count", "fraction"}``, most
        common first (ties by synset name).

    Notes
    -----
    ``correct`` implies nothing about the set, but the converse holds: when the set holds the true class
    and every class of the set has a synset, the answer is correct. Hence ``coverage >= set_coverage`` with
    ``coverage - set_coverage == coverage_gain``; they are equal when no set that misses its true class
    has an ancestor above it.
    """
    m = _check_sets(sets)
    n, n_classes = m.shape
    y = _check_labels(labels, n, n_classes)
    top = check_positive_int("top", top)
    if classnames is not None and len(classnames) != n_classes:
        raise ClipauditError(f"classnames has {len(classnames)} entries for {n_classes} classes.")
    syn = _resolve(synsets, n_classes, wordnet, classnames)

    lattice = _Lattice()
    class_depth = [None if s is None else int(s.min_depth()) for s in syn]
    found: dict[tuple[int, ...], tuple[Any, ...]] = {}  # members -> (kind, answer, name, synset, depth, set depth)

    def answer_of(members: tuple[int, ...]) -> tuple[Any, ...]:
        if not members:
            return "empty", None, "(empty set)", None, pd.NA, None
        if len(members) == 1:
            c = members[0]
            s = syn[c]
            name = str(classnames[c]) if classnames is not None else _name(s) if s is not None else f"class {c}"
            return ("class", str(c), name, None if s is None else s.name(),
                    pd.NA if s is None else class_depth[c], None)
        if any(syn[c] is None for c in members):
            return "unmapped", None, "(unmapped)", None, pd.NA, None
        a = lattice.lowest([syn[c] for c in members])
        if a is None:  # synsets of different parts of speech share no hypernym
            return "unmapped", None, "(no common hypernym)", None, pd.NA, None
        mean_depth = float(np.mean([class_depth[c] for c in members]))
        return "ancestor", a.name(), _name(a), a.name(), int(a.min_depth()), mean_depth

    rows: list[tuple[Any, ...]] = []
    correct: list[Any] = []
    for i in range(n):
        members = tuple(np.flatnonzero(m[i]).tolist())
        if members not in found:
            found[members] = answer_of(members)
        row = found[members]
        rows.append(row)
        if y is None:
            correct.append(pd.NA)
        elif row[0] == "class":
            correct.append(int(y[i]) == members[0])
        elif row[0] == "ancestor":
            true = syn[int(y[i])]
            correct.append(true is not None and row[3] in lattice.closure(true))
        else:
            correct.append(False)
    kind, answer, answer_name, synset_name, depths, set_depth = (list(col) for col in zip(*rows)) if rows \
        else ([], [], [], [], [], [])
    size = m.sum(axis=1).astype(np.int64)

    table = pd.DataFrame({
        "size": size, "kind": kind, "answer": pd.Series(answer, dtype=object),
        "answer_name": answer_name, "synset": pd.Series(synset_name, dtype=object),
        "is_class": np.asarray([k == "class" for k in kind], bool),
        "depth": pd.array(depths, dtype="Int64"), "correct": pd.array(correct, dtype="boolean"),
    })
    summary = _summary(table, m, y, [d for d, s in zip(set_depth, kind) if s == "ancestor"],
                       [d for d in class_depth if d is not None], top)
    return HierarchicalAnswers(table, summary)


def _summary(table: pd.DataFrame, m: np.ndarray, y: np.ndarray | None, set_depth: list[float],
             class_depth: list[int], top: int) -> dict[str, Any]:
    n = len(table)
    kinds = table["kind"].to_numpy()

    def frac(mask: np.ndarray) -> float | None:
        return float(mask.mean()) if n else None

    anc = kinds == "ancestor"
    anc_depth = table.loc[anc, "depth"].astype(float).tolist()
    ans_depth = table["depth"].dropna().astype(float).tolist()
    out: dict[str, Any] = {"n": int(n), "coverage": None, "set_coverage": None, "coverage_gain": None}
    if y is not None and n:
        correct = table["correct"].to_numpy(dtype=bool)
        covered = m[np.arange(n), y]
        out |= {"coverage": float(correct.mean()), "set_coverage": float(covered.mean()),
                "coverage_gain": float((correct & ~covered).mean())}
    counts = Counter(a for a, k in zip(table["answer"], kinds) if k == "ancestor")
    names = dict(zip(table.loc[anc, "answer"], table.loc[anc, "answer_name"]))
    depths = dict(zip(table.loc[anc, "answer"], table.loc[anc, "depth"]))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    out |= {
        "class_fraction": frac(kinds == "class"), "ancestor_fraction": frac(anc),
        "unmapped_fraction": frac(kinds == "unmapped"), "empty_fraction": frac(kinds == "empty"),
        "mean_answer_depth": _mean(ans_depth), "mean_ancestor_depth": _mean(anc_depth),
        "mean_set_class_depth": _mean(set_depth),
        "mean_depth_drop": _mean([s - a for s, a in zip(set_depth, anc_depth)]),
        "mean_class_depth": _mean([float(d) for d in class_depth]),
        "top_ancestors": [{"answer": a, "answer_name": names[a], "depth": int(depths[a]), "count": int(c),
                           "fraction": c / n} for a, c in ranked],
    }
    return out
