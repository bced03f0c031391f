"""Find the project's data files (prompts/, descriptors/, model configs, bundled data) from any install.

In a source checkout (and an editable install) the folders ``prompts/`` and ``descriptors/`` sit next
to the ``analysis/`` package; a wheel ships them inside the package as ``analysis/_data/<name>``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["data_dir", "package_dir", "default_cache_dir"]

_PKG = Path(__file__).resolve().parent


def package_dir() -> Path:
    """Folder of the installed ``analysis`` package."""
    return _PKG


def data_dir(name: str) -> Path:
    """Return the folder holding the project's ``name`` data files (``prompts`` or ``descriptors``)."""
    checkout = _PKG.parent / name
    if checkout.is_dir():
        return checkout
    shipped = Path(str(resources.files("analysis") / "_data" / name))
    if shipped.is_dir():
        return shipped
    raise FileNotFoundError(
        f"The {name!r} data folder was not found next to the package ({checkout}) nor inside it "
        f"({shipped}); the installation is incomplete: reinstall clipaudit."
    )


def default_cache_dir() -> Path:
    """Embedding cache folder: $CLIPAUDIT_CACHE, else ~/.cache/clipaudit."""
    import os

    env = os.environ.get("CLIPAUDIT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipaudit"
