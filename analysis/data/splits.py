"""Split names: which splits a dataset has, which one is used by default, and the errors for a wrong one.

Named datasets declare their splits on their registry entry (:class:`analysis.data.DatasetEntry`). Path
datasets say it by their shape: a folder whose subfolders are split folders (``train/``, ``val/``,
``test/``), or a manifest with a ``split`` column. Any other folder or manifest has no splits: its images
are recorded as split ``"unspecified"`` and asking for a split is an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .._checks import ClipauditError, close_matches
from .base import TEST, UNSPECIFIED

__all__ = ["SPLIT_FOLDERS", "DEFAULT_ORDER", "check_split", "preferred_split", "folder_splits", "no_splits"]

#: Subfolder names that make a dataset folder a folder of splits (in this order).
SPLIT_FOLDERS = ("train", "val", TEST)
#: Default split of path datasets with several: the first of these they have (evaluation reads test data).
DEFAULT_ORDER = (TEST, "val", "train")


def preferred_split(accepted: Sequence[str], order: Sequence[str] = DEFAULT_ORDER) -> str | None:
    """The first name of ``order`` found in ``accepted`` (None if there is none)."""
    return next((s for s in order if s in accepted), None)


def check_split(dataset: str, split: str | None, accepted: Sequence[str], default: str | None) -> str:
    """The split to load: ``split`` if ``accepted``, ``default`` when ``split`` is None.

    Raises
    ------
    ClipauditError
        ``split`` is not one of ``accepted`` (names the dataset, the accepted splits, the value and a close
        match), or no split was given and there is no default.
    """
    shown = ", ".join(repr(s) for s in accepted)
    if split is None:
        if default is None:
            raise ClipauditError(f"Dataset {dataset!r} has the splits {shown} and none is the default: "
                                 f"pass --split.")
        return default
    if split in accepted:
        return split
    near = close_matches(str(split), accepted)
    hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    raise ClipauditError(f"--split {split!r} is not a split of dataset {dataset!r}. Accepted: {shown}.{hint}")


def no_splits(dataset: str, split: str | None, how: str) -> str:
    """:data:`UNSPECIFIED` for data without splits; an error if a split was asked for anyway.

    ``how`` says what would give the data splits (e.g. "no train/ val/ test/ subfolders").
    """
    if split is not None:
        raise ClipauditError(f"--split {split!r}: dataset {dataset!r} has no splits ({how}); drop --split.")
    return UNSPECIFIED


def folder_splits(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The split subfolders of ``path`` (in :data:`SPLIT_FOLDERS` order) if every subfolder is one, else ()."""
    path = Path(path)
    if not path.is_dir():
        return ()
    subdirs = {d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")}
    if not subdirs or not subdirs <= set(SPLIT_FOLDERS):
        return ()
    return tuple(s for s in SPLIT_FOLDERS if s in subdirs)
