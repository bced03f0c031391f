"""Visual concepts of a class: PCA parts and K-means parts of the foreground tokens (spec §1.5).

Both are fit on the foreground patch tokens pooled over all images of a class, so concept ids are shared
by the class's images. Label maps use -1 for background.
"""

from __future__ import annotations

import numpy as np

from .._checks import ClipauditError, check_choice
from .spectral import l2_normalize, upsample_masks

__all__ = ["CONCEPT_METHODS", "pca_parts", "kmeans_parts", "concept_labels", "label_maps"]

CONCEPT_METHODS = ("pca", "kmeans")


def _check_2d(tokens: np.ndarray) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.ndim != 2:
        raise ClipauditError(f"tokens must have shape (n_patches, dim), got {tokens.shape}.")
    return tokens


def pca_parts(tokens: np.ndarray, *, n_parts: int = 5, random_state: int = 0) -> np.ndarray:
    """Label each token with the argmax of its min-max scaled PCA scores.

    Parameters
    ----------
    tokens : ndarray of shape (n_patches, dim)
        Raw (not normalised) foreground tokens, as in the reference.
    n_parts : int, default=5
        Number of PCA components; capped at ``min(n_patches, dim)``.
    random_state : int, default=0

    Returns
    -------
    ndarray of int, shape (n_patches,)
        Values in ``[0, n_parts)``.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler

    tokens = _check_2d(tokens)
    if len(tokens) == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(n_parts, *tokens.shape)
    if k < 2:
        return np.zeros(len(tokens), dtype=np.int64)
    scores = PCA(n_components=k, random_state=random_state).fit_transform(tokens)
    scaled = MinMaxScaler(clip=True).fit_transform(scores)
    return scaled.argmax(axis=1).astype(np.int64)


def kmeans_parts(tokens: np.ndarray, *, n_parts: int = 5, random_state: int = 0, max_iter: int = 500,
                 tol: float = 1e-4, n_init: int = 1) -> np.ndarray:
    """Label each token by K-means (Euclidean) on L2-normalised tokens, with scikit-learn, seeded.

    The reference uses ``kmeans_pytorch`` (random data-point initialisation, one run, unseeded,
    ``iter_limit=500``, ``tol=1e-4``). Here: ``sklearn.cluster.KMeans`` with k-means++ initialisation,
    ``n_init`` runs, a fixed ``random_state``; labels are renumbered by first appearance so ids are stable.

    Returns
    -------
    ndarray of int, shape (n_patches,)
    """
    from sklearn.cluster import KMeans

    tokens = _check_2d(tokens)
    if len(tokens) == 0:
        return np.zeros(0, dtype=np.int64)
    x = l2_normalize(tokens)
    k = min(n_parts, len(np.unique(x.round(6), axis=0)))
    if k < 2:
        return np.zeros(len(tokens), dtype=np.int64)
    labels = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, tol=tol,
                    random_state=random_state).fit_predict(x)
    _, first = np.unique(labels, return_index=True)
    remap = np.empty(labels.max() + 1, dtype=np.int64)
    remap[labels[np.sort(first)]] = np.arange(len(first))
    return remap[labels]


def concept_labels(tokens: np.ndarray, foreground: np.ndarray, *, method: str = "pca", n_parts: int = 5,
                   random_state: int = 0) -> np.ndarray:
    """Patch-level concept label maps of a class's images.

    Parameters
    ----------
    tokens : ndarray of shape (n_images, h*w, dim)
    foreground : ndarray of bool, shape (n_images, h, w)
        Patch-level foreground (from :func:`~analysis.concepts.spectral.foreground_masks`).
    method : {"pca", "kmeans"}, default="pca"
    n_parts : int, default=5
    random_state : int, default=0

    Returns
    -------
    ndarray of int, shape (n_images, h, w)
        Concept id per foreground patch, -1 on background.
    """
    check_choice("method", method, CONCEPT_METHODS)
    tokens = np.asarray(tokens)
    foreground = np.asarray(foreground, dtype=bool)
    if tokens.ndim != 3 or foreground.shape[0] != tokens.shape[0] or foreground[0].size != tokens.shape[1]:
        raise ClipauditError(
            f"tokens (n_images, h*w, dim) and foreground (n_images, h, w) disagree: {tokens.shape} vs "
            f"{foreground.shape}."
        )
    flat_fg = foreground.reshape(len(foreground), -1)
    fg_tokens = tokens[flat_fg]
    fit = pca_parts if method == "pca" else kmeans_parts
    labels = np.full(flat_fg.shape, -1, dtype=np.int64)
    labels[flat_fg] = fit(fg_tokens, n_parts=n_parts, random_state=random_state)
    return labels.reshape(foreground.shape)


def label_maps(labels: np.ndarray, size: tuple[int, int], refined: np.ndarray | None = None) -> np.ndarray:
    """Upsample patch label maps (nearest) to pixel size and blank (-1) pixels outside ``refined``.

    Parameters
    ----------
    labels : ndarray of int, shape (n_images, h, w)
    size : (H, W)
    refined : ndarray of bool, shape (n_images, H, W), optional
        Pixel foreground (the CRF mask); pixels where it is False become -1.
    """
    maps = upsample_masks(np.asarray(labels, dtype=np.int32), size).astype(np.int64)
    if refined is not None:
        maps[~np.asarray(refined, dtype=bool)] = -1
    return maps
