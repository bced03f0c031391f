"""Figures for the report: matplotlib -> base64 data URIs (SVG, or PNG for images), reproducible bytes."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["figure_uri", "png_uri", "bar_figure", "confusion_figure", "lines_figure", "histogram_figure"]


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "clipaudit"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text (searchable, escaped by matplotlib)
    return plt


def figure_uri(fig: Any) -> str:
    """Serialise a matplotlib figure as an SVG data URI (embedded with <img>, so it cannot run scripts)."""
    plt = _mpl()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def bar_figure(labels: Sequence[str], values: Sequence[float], *, xlabel: str, title: str = "") -> str:
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(labels) + 1))
    y = np.arange(len(labels))
    ax.barh(y, values, color="#4c72b0")
    ax.set_yticks(y, [str(s) for s in labels])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(1.0, float(np.max(values)) if len(values) else 1.0))
    if title:
        ax.set_title(title)
    return figure_uri(fig)


def confusion_figure(matrix: np.ndarray, labels: Sequence[str]) -> str:
    """Row-normalised confusion matrix heat map (rows: true class)."""
    import seaborn as sns

    plt = _mpl()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(0.45 * n + 2.5, 0.45 * n + 2))
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    sns.heatmap(rows, ax=ax, cmap="Blues", vmin=0, vmax=1, annot=n <= 12, fmt=".2f", cbar=True,
                xticklabels=[str(s) for s in labels], yticklabels=[str(s) for s in labels], square=True)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return figure_uri(fig)


def lines_figure(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str, ylabel: str,
                 title: str = "", diagonal: bool = False) -> str:
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=str(name))
    if diagonal:
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_uri(fig)


def histogram_figure(groups: dict[str, Sequence[float]], *, xlabel: str, title: str = "", bins: int = 30) -> str:
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    values = [np.asarray(v, float) for v in groups.values() if len(v)]
    if values:
        edges = np.histogram_bin_edges(np.concatenate(values), bins=bins)
        for name, v in groups.items():
            if len(v):
                ax.hist(np.asarray(v, float), bins=edges, alpha=0.55, label=f"{name} (n={len(v)})", density=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return figure_uri(fig)
