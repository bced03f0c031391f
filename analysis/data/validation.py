"""What a dataset is made of, checked in one place (in the style of sklearn's ``check_*`` helpers).

- :func:`check_classnames`: class names are non-empty text and distinct (unless duplicates are allowed,
  as ImageNet's "missile" and "sunglasses" need);
- :func:`parse_labels`: the labels written in a file (class names or class indices, as text or numbers)
  turned into class indices; a label that is not a class is an error naming the file and row, with the
  closest class name;
- :func:`check_inferred_classnames`: class names read off the data itself (manifest labels, folder
  names) that look like a typo of another class are an error;
- :func:`check_dataset`: the final check of every dataset :func:`analysis.data.create_dataset` returns
  (labels in range, distinct class names, at least two classes for evaluation).

Every failure is a :class:`~analysis._checks.ClipauditError` of one line saying where the bad value is,
what is accepted and how to fix it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._checks import ClipauditError, close_matches

__all__ = ["check_classnames", "parse_labels", "check_inferred_classnames", "check_dataset",
           "DUPLICATES_HINT", "TYPO_RATIO", "TYPO_FREQUENCY"]

#: A label is read as a class index when it is written as a number (``3``, ``3.0``, ``+3``, ``3e0``).
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
#: How to allow duplicate class names (the CLI option and the Python keyword).
DUPLICATES_HINT = ("or allow them with --allow-duplicate-classnames "
                   "(create_dataset(..., allow_duplicate_classnames=True))")
#: An inferred class name is a suspected typo of another when their similarity (difflib ratio, case-blind)
#: is at least this and ...
TYPO_RATIO = 0.8
#: ... the other class has at least this many times more images.
TYPO_FREQUENCY = 4


def _shown(names: Sequence[str], n: int = 8) -> str:
    return ", ".join(repr(x) for x in names[:n]) + (", ..." if len(names) > n else "")


def check_classnames(names: Sequence[Any], *, source: str, allow_duplicates: bool = False) -> list[str]:
    """Return ``names`` as a list after checking each is non-empty text and no two are equal.

    Parameters
    ----------
    names : sequence
        Class names in label order.
    source : str
        Where they come from, for messages (``"--classnames 'names.txt'"``, ``"Dataset 'x'"``).
    allow_duplicates : bool, default=False
        Accept repeated names (ImageNet-1k's curated names repeat "missile" and "sunglasses").

    Raises
    ------
    ClipauditError
        A name that is not text or is blank (its position), or repeated names (each with its positions).
    """
    out = list(names)
    for i, name in enumerate(out):
        if not isinstance(name, str):
            raise ClipauditError(f"{source}: class {i} has the name {name!r}; class names must be text.")
        if not name.strip():
            raise ClipauditError(f"{source}: class {i} has an empty name; give every class a name.")
    if not allow_duplicates:
        counts = Counter(n.strip() for n in out)
        dups = [n for n, c in counts.items() if c > 1]
        if dups:
            where = "; ".join(f"{d!r} at classes {[i for i, n in enumerate(out) if n.strip() == d][:6]}"
                              for d in dups[:4])
            more = f" (+{len(dups) - 4} more)" if len(dups) > 4 else ""
            raise ClipauditError(
                f"{source}: duplicate class names: {where}{more}. Zero-shot prompts cannot tell such classes "
                f"apart; give each class a distinct name, {DUPLICATES_HINT}."
            )
    return out


def _as_index(value: Any) -> int | float | None:
    """The number ``value`` is written as (an int when integral), or None when it is not a number."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        v = float(value.strip())
    else:
        return None
    return int(v) if math.isfinite(v) and v.is_integer() else v


def parse_labels(values: Sequence[Any], classnames: Sequence[str] | None = None, *, source: str,
                 lines: Sequence[int] | None = None, allow_missing: bool = False,
                 classnames_source: str = "--classnames") -> tuple[np.ndarray, list[str]]:
    """Class indices of labels written in a file, and the class names they index.

    A label written as an integral number (``3``, ``"3"``, ``"3.0"``, JSON ``3.0``) is a class index and must
    be in ``0 .. n_classes - 1``; any other text is a class name. With ``classnames`` every name must be one
    of them (a typo is an error with the closest name); without, the names are numbered in order of first
    appearance, must not look like a typo of one another (:func:`check_inferred_classnames`) and class
    indices are refused (nothing says which class an index means).

    Parameters
    ----------
    values : sequence
        One label per row (str, int, float or None).
    classnames : sequence of str, optional
        The class list the labels must belong to.
    source : str
        The file, for messages.
    lines : sequence of int, optional
        Line number of each row in ``source`` (messages say ``FILE:LINE``); default: the row number.
    allow_missing : bool, default=False
        Accept empty labels (label -1: an image without a class, e.g. in a caption manifest).
    classnames_source : str, default="--classnames"
        Where ``classnames`` come from, for messages.

    Returns
    -------
    labels : ndarray of shape (n_rows,), int64
        Class index per row (-1 for an empty label when allowed).
    classnames : list of str
        ``classnames``, or the names found in ``values``.

    Raises
    ------
    ClipauditError
        Naming ``FILE:LINE``: an empty label (unless allowed), a label that is neither an integral class index
        in range nor a class name, an unknown class name (with the closest ones), or a class index without
        class names.
    """
    given = classnames is not None
    names = list(classnames) if given else []
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        index.setdefault(str(n).strip(), i)
    out = np.full(len(values), -1, dtype=np.int64)
    first_index_row: str | None = None

    def where(i: int) -> str:
        return f"{source}:{lines[i]}" if lines is not None else f"{source} row {i + 1}"

    accepted = (f"a class name of {classnames_source} or a class index 0..{len(names) - 1}" if given
                else "a class name")
    for i, raw in enumerate(values):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if allow_missing:
                continue
            raise ClipauditError(f"{where(i)}: empty label. Every row needs a label ({accepted}).")
        text = raw.strip() if isinstance(raw, str) else None
        number = _as_index(raw)
        if text is not None and text in index:  # a class name wins over reading it as a number ('00' is a name)
            out[i] = index[text]
        elif isinstance(number, int):
            if not given:
                first_index_row = first_index_row or f"{where(i)} ({raw!r})"
                continue
            if not 0 <= number < len(names):
                raise ClipauditError(f"{where(i)}: class index {raw!r} is out of range: {classnames_source} has "
                                     f"{len(names)} classes (indices 0..{len(names) - 1}).")
            out[i] = number
        elif number is not None:
            raise ClipauditError(f"{where(i)}: label {raw!r} is not an integer class index "
                                 f"(expected {accepted}).")
        elif text is None:
            raise ClipauditError(f"{where(i)}: label {raw!r} is neither a class name nor a class index.")
        elif given:
            near = close_matches(text, names)
            hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise ClipauditError(f"{where(i)}: label {text!r} is not one of the {len(names)} class names of "
                                 f"{classnames_source} ({_shown(names)}).{hint}")
        else:
            index[text] = len(names)
            names.append(text)
            out[i] = index[text]
    if first_index_row is not None:
        raise ClipauditError(f"{source} has class indices as labels (first: {first_index_row}) but no class "
                             f"names: pass --classnames FILE (one name per line, in index order).")
    if not given and names:
        counts = np.bincount(out[out >= 0], minlength=len(names))
        check_inferred_classnames(names, counts, source=source, what="label")
    return out, names


def check_inferred_classnames(names: Sequence[str], counts: Sequence[int] | np.ndarray, *, source: str,
                              what: str = "label") -> None:
    """Refuse class names read off the data that look like a typo of another class.

    Two names are suspect when they differ only in case, spaces, ``_`` or ``-``; or when their similarity
    (:class:`difflib.SequenceMatcher` ratio, case-blind) is at least :data:`TYPO_RATIO` and the more common
    one has at least :data:`TYPO_FREQUENCY` times as many images (``bagg`` x 1 next to ``bag`` x 100).
    Classes without images here (other splits) are not compared.

    Parameters
    ----------
    names : sequence of str
        Class names in label order.
    counts : sequence of int
        Images per class.
    source : str
        The file or folder, for messages.
    what : str, default="label"
        What a name is in ``source`` ("label", "class folder").

    Raises
    ------
    ClipauditError
        Names the suspect class, its image count, the class it resembles and how to keep both
        (an explicit ``--classnames`` list turns the check off).
    """
    counts = np.asarray(counts)
    present = [(str(n), int(c)) for n, c in zip(names, counts) if c > 0]

    def key(n: str) -> str:
        return re.sub(r"[\s_\-]+", " ", n).strip().lower()

    def fail(rare: str, n_rare: int, common: str, n_common: int) -> None:
        raise ClipauditError(
            f"{source}: {what} {rare!r} ({n_rare} image{'s' * (n_rare != 1)}) looks like a typo of {common!r} "
            f"({n_common} image{'s' * (n_common != 1)}). Fix it, or if both are real classes pass --classnames "
            f"FILE listing every class (labels are then checked against that list only)."
        )

    by_key: dict[str, tuple[str, int]] = {}
    for n, c in present:
        k = key(n)
        if k in by_key:
            other, oc = by_key[k]
            rare, common = ((n, c), (other, oc)) if c <= oc else ((other, oc), (n, c))
            fail(*rare, *common)
        by_key[k] = (n, c)
    if len(present) < 2:
        return
    top = max(c for _, c in present)
    lowered = [(n.lower(), n, c) for n, c in present]
    for low, name, count in lowered:
        if count * TYPO_FREQUENCY > top:
            continue  # not rare enough next to any class
        common = [(low2, n2, c2) for low2, n2, c2 in lowered if c2 >= TYPO_FREQUENCY * count and n2 != name]
        matcher = difflib.SequenceMatcher(b=low, autojunk=False)
        for low2, n2, c2 in common:
            matcher.set_seq1(low2)
            if (matcher.real_quick_ratio() >= TYPO_RATIO and matcher.quick_ratio() >= TYPO_RATIO
                    and matcher.ratio() >= TYPO_RATIO):
                fail(name, count, n2, c2)


def check_dataset(ds: Any, *, min_classes: int = 2, allow_duplicate_classnames: bool = False,
                  classnames_source: str | None = None) -> Any:
    """Check a built dataset and return it: the last step of :func:`analysis.data.create_dataset`.

    Parameters
    ----------
    ds : ImageDataset
    min_classes : int, default=2
        Labelled data must hold images of at least this many classes (evaluation with one class is
        meaningless); 1 turns the check off. Data without labels (captions only) is not checked.
    allow_duplicate_classnames : bool, default=False
        Accept repeated class names (also accepted when the dataset says so: ImageNet loaders set
        ``ds.allow_duplicate_classnames``).
    classnames_source : str, optional
        Where the class names were given (``"--classnames 'names.txt'"``), for messages.

    Raises
    ------
    ClipauditError
        Class names blank, not text or repeated; a label outside ``-1 .. n_classes - 1`` (names the image);
        fewer than ``min_classes`` classes among the labelled images.
    """
    where = f"Dataset {ds.name!r}" + (f" (split {ds.split!r})" if ds.split != "unspecified" else "")
    allow = allow_duplicate_classnames or bool(getattr(ds, "allow_duplicate_classnames", False))
    check_classnames(ds.classnames, source=classnames_source or f"{where} class names", allow_duplicates=allow)
    labels = np.asarray(ds.labels)
    if labels.ndim != 1 or len(labels) != len(ds) or not np.issubdtype(labels.dtype, np.integer):
        raise ClipauditError(f"{where}: labels must be one integer per image, got shape {labels.shape} "
                             f"of {labels.dtype}.")
    bad = np.flatnonzero((labels < -1) | (labels >= len(ds.classnames)))
    if len(bad):
        i = int(bad[0])
        raise ClipauditError(f"{where}: image {ds.describe(i)} has label {int(labels[i])} but there are "
                             f"{len(ds.classnames)} classes (labels 0..{len(ds.classnames) - 1}; "
                             f"{len(bad)} image(s) out of range).")
    present = np.unique(labels[labels >= 0])
    if 0 < len(present) < min_classes:
        only = ", ".join(repr(ds.classnames[int(c)]) for c in present)
        plural = "es" if len(present) != 1 else ""
        raise ClipauditError(
            f"{where}: all labelled images are of class{plural} {only}: evaluation needs images of at least "
            f"{min_classes} classes (zero-shot accuracy and AUROC are meaningless with one class). Add images "
            f"of other classes or pick another split/subset."
        )
    return ds
