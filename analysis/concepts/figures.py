"""Per-class concept figures as PNG bytes (image, foreground, concept segments, a visual prompt per method).

Pure: arrays in, bytes out; callers write the file (``clipaudit concepts``, :mod:`analysis.audit`).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["class_figure_png", "figure_filename"]


def _colour(labels: np.ndarray, n: int = 10) -> np.ndarray:
    from matplotlib import colormaps

    palette = (np.asarray(colormaps["tab10"].colors)[:n] * 255).astype(np.uint8)
    out = np.zeros((*labels.shape, 3), np.uint8)
    fg = labels >= 0
    out[fg] = palette[labels[fg] % n]
    return out


def figure_filename(classname: str) -> str:
    """File name of a class's figure: the class name reduced to ``[A-Za-z0-9._-]`` plus ``.png``."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", classname).strip("-") or "class") + ".png"


def class_figure_png(data: dict[str, Any], classname: str, *, dpi: int = 80) -> bytes:
    """One PNG per class: rows = images; columns = image, foreground, segments per method, a prompt.

    ``data`` is one entry of :attr:`analysis.concepts.pipeline.ConceptsResult.figures`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, methods = data["images"], list(data["labels"])
    n_cols = 2 + 2 * len(methods)
    fig, axes = plt.subplots(len(images), n_cols, figsize=(1.8 * n_cols, 1.8 * len(images)), squeeze=False)
    for r, image in enumerate(images):
        panels = [(image, "image"), (np.where(data["foreground"][r][..., None], image, image // 4), "foreground")]
        for m in methods:
            panels.append((_colour(data["labels"][m][r]), f"{m} concepts"))
            prompts = data["prompts"][m][r]
            panels.append((prompts[0] if len(prompts) else image, f"{m} prompt"))
        for ax, (arr, title) in zip(axes[r], panels, strict=True):
            ax.imshow(arr, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r][0].set_ylabel(Path(data["items"][r]).name[:18], fontsize=7)
    fig.suptitle(classname, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
