"""Model loading: one entry point, :func:`load_model`, for every model source.

Sources, tried in this order:

1. a model this project ships or trained: a registered name (``clipaudit-lit``) or a folder holding
   ``clipaudit_model.json`` (its ``kind`` picks the loader from :data:`MODEL_KINDS`);
2. ``local-dir:PATH`` (or a folder holding ``open_clip_config.json``): open_clip's local folder format;
3. any ``open_clip`` architecture name with ``pretrained`` = a tag (downloaded by open_clip when there is
   network), a local checkpoint file, or nothing (random init). The project's tiny test configs
   (``clipaudit-tiny-vit``, ``clipaudit-tiny-rn``) are registered with open_clip at import.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from .._checks import ClipauditError
from .._registry import Registry
from .base import ClipModel, ModelInfo, resolve_device, state_dict_sha256
from .openclip import LOCAL_DIR, OpenClipModel, load_open_clip

__all__ = [
    "ClipModel", "ModelInfo", "OpenClipModel", "load_model", "list_models", "MODEL_KINDS",
    "PROJECT_MODELS", "register_project_model", "state_dict_sha256", "CONFIG_DIR", "PROJECT_CONFIG", "resolve_device",
]

CONFIG_DIR = Path(__file__).parent / "configs"
PROJECT_CONFIG = "clipaudit_model.json"

#: kind -> loader(folder, device) for models this project trained (filled by e.g. ``models.lit``).
MODEL_KINDS: Registry[Callable[[Path, torch.device], ClipModel]] = Registry("model kind")
#: name -> folder of a model shipped with the package.
PROJECT_MODELS: Registry[Path] = Registry("clipaudit model")


def _register_open_clip_configs() -> None:
    import open_clip

    if not set(p.stem for p in CONFIG_DIR.glob("*.json")) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


def register_project_model(name: str, folder: Path, help: str = "") -> None:
    """Make ``name`` resolve to a shipped model folder (with ``clipaudit_model.json``)."""
    PROJECT_MODELS.register(name, Path(folder), help)


def _load_project_folder(folder: Path, device: torch.device) -> ClipModel:
    cfg_path = folder / PROJECT_CONFIG
    try:
        kind = json.loads(cfg_path.read_text())["kind"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ClipauditError(f"{cfg_path}: not a valid clipaudit model config ({err}).") from None
    return MODEL_KINDS.get(kind)(folder, device)


def _import_project_kinds() -> None:
    """Import modules that register project model kinds (kept lazy: they may pull heavy deps)."""
    from importlib import import_module

    for mod in ("analysis.models.lit",):
        try:
            import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise


def load_model(model: str, pretrained: str | None = None, *, device: str | torch.device = "cpu",
               cache_dir: str | None = None) -> ClipModel:
    """Load a model from any supported source and wrap it as a :class:`ClipModel`.

    Parameters
    ----------
    model : str
        A clipaudit model name or folder, ``local-dir:PATH``, or an open_clip architecture name.
    pretrained : str, optional
        For open_clip names: a pretrained tag (e.g. ``laion2b_s34b_b79k``) or a checkpoint file.
    device : str or torch.device, default="cpu"
        cpu, cuda, cuda:N, mps or auto (:func:`resolve_device`).
    cache_dir : str, optional
        Where open_clip keeps downloaded weights.

    Raises
    ------
    ClipauditError
        Unknown model or tag, missing file, a checkpoint that does not match the config or cannot be loaded
        safely, or an unknown or absent device.
    """
    device = resolve_device(device)
    _import_project_kinds()
    if model in PROJECT_MODELS:
        return _load_project_folder(PROJECT_MODELS.get(model), device)
    path = Path(model).expanduser()
    if not model.startswith(LOCAL_DIR) and path.is_dir():
        if (path / PROJECT_CONFIG).is_file():
            return _load_project_folder(path, device)
        if (path / "open_clip_config.json").is_file():
            return load_open_clip(f"{LOCAL_DIR}{path}", device=device)
        raise ClipauditError(
            f"Folder {model!r} has neither {PROJECT_CONFIG} nor open_clip_config.json: it is not a model folder."
        )
    _register_open_clip_configs()
    return load_open_clip(model, pretrained, device=device, cache_dir=cache_dir)


def list_models() -> dict[str, list[str]]:
    """Known model names by source: clipaudit models and open_clip architectures (with tags)."""
    import open_clip

    _import_project_kinds()
    _register_open_clip_configs()
    tags: dict[str, list[str]] = {}
    for name, tag in open_clip.list_pretrained():
        tags.setdefault(name, []).append(tag)
    return {
        "clipaudit": PROJECT_MODELS.list(),
        "open_clip": [f"{n} ({', '.join(tags[n])})" if n in tags else n for n in open_clip.list_models()],
    }
