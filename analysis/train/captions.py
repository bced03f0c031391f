"""Captions for training: from a manifest's own captions, or built from class names with templates.

A class-labelled dataset becomes image-caption data by filling prompt templates with the class name,
its synonyms and "a kind of" phrases (``"sneaker, a kind of footwear"``). Every image of a class shares
the class's caption list; each epoch draws one caption per image, reproducibly from ``(seed, epoch)``.

The result is a :class:`CaptionPool`: the distinct caption strings once (so a locked text tower encodes
each string once) and, per image, a contiguous range of pool indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import ClipauditError

__all__ = ["CaptionPool", "fill_template", "class_captions", "caption_pool_from_classes",
           "caption_pool_from_lists", "caption_pool"]


@dataclass(frozen=True)
class CaptionPool:
    """Caption strings and, for image ``i``, the candidates ``texts[starts[i] : starts[i] + counts[i]]``.

    Attributes
    ----------
    texts : list of str
        Caption strings (shared by all images of a class when built from class names).
    starts, counts : ndarray of shape (n_images,), int64
    """

    texts: list[str]
    starts: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return int(len(self.starts))

    def candidates(self, index: int) -> list[str]:
        s = int(self.starts[index])
        return self.texts[s:s + int(self.counts[index])]

    def sample(self, seed: int, epoch: int) -> np.ndarray:
        """One caption index (into ``texts``) per image, a pure function of ``(seed, epoch)``."""
        u = np.random.default_rng([int(seed), int(epoch)]).random(len(self.starts))
        return self.starts + np.minimum((u * self.counts).astype(np.int64), self.counts - 1)


def fill_template(template: str, name: str) -> str:
    """Put ``name`` in a template using ``{}`` (open_clip style) or ``{c}`` (CLIP_benchmark style)."""
    if "{}" not in template and "{c}" not in template:
        raise ClipauditError(f"Template {template!r} has no '{{}}' or '{{c}}' placeholder for the class name.")
    return template.replace("{c}", name).replace("{}", name)


def class_captions(classnames: Sequence[str], templates: Any, *,
                   synonyms: Mapping[str, Sequence[str]] | None = None,
                   kind_of: Mapping[str, Sequence[str]] | None = None) -> list[list[str]]:
    """Captions per class: every template filled with every name of the class.

    Parameters
    ----------
    classnames : sequence of str
    templates : TemplateSet or sequence of str
        A :class:`analysis.data.prompts.TemplateSet` (its ``templates``, plus its ``per_class`` captions,
        which are used as they are) or plain template strings.
    synonyms : mapping of class name -> list of str, optional
        Other names for a class; each is used like the class name.
    kind_of : mapping of class name -> list of str, optional
        Parent concepts (e.g. WordNet hypernym lemmas); adds names ``"{name}, a kind of {parent}"``.

    Returns
    -------
    list of list of str
        One de-duplicated caption list per class, in class order.

    Raises
    ------
    ClipauditError
        A synonym/kind_of key that is not a class name, or a template without placeholder.
    """
    per_class = getattr(templates, "per_class", None) or {}
    strings = list(getattr(templates, "templates", templates) or [])
    for arg, mapping in (("synonyms", synonyms), ("kind_of", kind_of)):
        unknown = sorted(set(mapping or {}) - set(classnames))
        if unknown:
            raise ClipauditError(
                f"{arg}: keys {unknown[:5]} are not class names. Accepted: {list(classnames)[:20]}."
            )
    if not strings and not per_class:
        raise ClipauditError("templates: no templates and no per-class captions given.")
    out = []
    for name in classnames:
        names = [name, *((synonyms or {}).get(name, []))]
        names += [f"{n}, a kind of {parent}" for parent in (kind_of or {}).get(name, []) for n in names[:1]]
        caps = [fill_template(t, n) for n in names for t in strings] + list(per_class.get(name, []))
        if not caps:
            raise ClipauditError(f"templates: no caption for class {name!r} (it has no per-class captions).")
        out.append(list(dict.fromkeys(caps)))
    return out


def caption_pool_from_classes(labels: np.ndarray, captions_per_class: Sequence[Sequence[str]]) -> CaptionPool:
    """Pool where image ``i`` draws from the captions of class ``labels[i]`` (labels -1: no caption)."""
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.array([len(c) for c in captions_per_class], dtype=np.int64)
    if labels.size and labels.max() >= len(sizes):
        raise ClipauditError(f"labels: class index {int(labels.max())} but only {len(sizes)} caption lists.")
    class_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    texts = [c for caps in captions_per_class for c in caps]
    known = labels >= 0
    starts = np.where(known, class_starts[np.maximum(labels, 0)], 0)
    counts = np.where(known, sizes[np.maximum(labels, 0)], 0)
    return CaptionPool(texts, starts.astype(np.int64), counts.astype(np.int64))


def caption_pool_from_lists(captions: Sequence[Sequence[str]]) -> CaptionPool:
    """Pool from per-image caption lists (an image-caption manifest)."""
    counts = np.array([len(c) for c in captions], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts
    return CaptionPool([c for caps in captions for c in caps], starts, counts)


def caption_pool(dataset: Any, templates: Any = None, *, synonyms: Mapping[str, Sequence[str]] | None = None,
                 kind_of: Mapping[str, Sequence[str]] | None = None) -> CaptionPool:
    """Captions for a dataset: its own ``captions`` if it has them, else class names through ``templates``.

    Raises
    ------
    ClipauditError
        The dataset has neither captions nor (labels and templates).
    """
    if dataset.captions is not None:
        return caption_pool_from_lists(dataset.captions)
    if templates is None or not len(dataset.classnames):
        raise ClipauditError(
            f"Dataset {dataset.name!r} has no captions; give class names and --templates to build captions."
        )
    per_class = class_captions(dataset.classnames, templates, synonyms=synonyms, kind_of=kind_of)
    return caption_pool_from_classes(dataset.labels, per_class)
