"""Foreground masks by graph decomposition of patch tokens (Sammani & Deligiannis 2024, §1.3 of the spec).

All images of one class are decomposed *jointly*: the L2-normalised patch tokens of every image are stacked
into one matrix ``F`` of shape (n_images * h * w, d), and the left singular vectors of ``F`` (the
eigenvectors of the uncentred cosine affinity ``F F^T``; no thresholding, no Laplacian) are read.
Component 1 (the 2nd-largest) separates foreground from background; component 0 is roughly the shared
mean direction. A sign rule makes the positive side the minority, which is taken to be the foreground.

Everything here is a pure function over numpy arrays; the patch grid ``(h, w)`` is an input, so
non-square and CNN grids (e.g. 7x7) work.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from .._checks import ClipauditError, check_choice

__all__ = [
    "FOREGROUND_METHODS",
    "l2_normalize",
    "decompose_tokens",
    "apply_sign_rule",
    "foreground_scores",
    "threshold_scores",
    "largest_regions",
    "upsample_masks",
    "foreground_masks",
]

FOREGROUND_METHODS = ("svd", "pca")


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Divide ``x`` by its L2 norm along ``axis`` (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def _check_tokens(tokens: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    tokens = np.asarray(tokens)
    if tokens.ndim != 3:
        raise ClipauditError(
            f"tokens must have shape (n_images, h*w, dim), got an array of shape {tokens.shape}."
        )
    h, w = (int(g) for g in grid)
    if h < 1 or w < 1 or h * w != tokens.shape[1]:
        raise ClipauditError(
            f"grid={tuple(grid)} does not match tokens with {tokens.shape[1]} positions per image "
            f"(h*w must equal {tokens.shape[1]})."
        )
    return tokens, h, w


def decompose_tokens(tokens: np.ndarray, *, method: str = "svd", n_components: int = 3,
                     random_state: int = 0) -> np.ndarray:
    """Per-patch component scores of the pooled, L2-normalised tokens.

    Parameters
    ----------
    tokens : ndarray of shape (n_patches, dim)
        Patch tokens pooled over the images of one class.
    method : {"svd", "pca"}, default="svd"
        ``"svd"``: thin SVD of the uncentred normalised tokens; returns ``U[:, :n_components]`` (the
        reference's graph decomposition). ``"pca"``: scikit-learn PCA (centred) of the normalised tokens.
    n_components : int, default=3
    random_state : int, default=0
        Only used by PCA's solver.

    Returns
    -------
    ndarray of shape (n_patches, n_components)
        Raw component scores (sign not yet fixed, see :func:`apply_sign_rule`).
    """
    check_choice("method", method, FOREGROUND_METHODS)
    x = l2_normalize(tokens)
    k = min(n_components, *x.shape)
    if method == "svd":
        u, _, _ = np.linalg.svd(x, full_matrices=False)
        return u[:, :k]
    from sklearn.decomposition import PCA

    return PCA(n_components=k, random_state=random_state).fit_transform(x)


def apply_sign_rule(components: np.ndarray) -> np.ndarray:
    """Negate every column whose fraction of positive entries is strictly between 0.5 and 1.

    Afterwards the positive side of each component is the minority (taken to be the foreground).
    A column that is positive everywhere is left as it is, as in the reference.
    """
    components = np.array(components, dtype=np.float64, copy=True)
    frac_pos = (components > 0).mean(axis=0)
    flip = (frac_pos > 0.5) & (frac_pos < 1)
    components[:, flip] *= -1
    return components


def foreground_scores(tokens: np.ndarray, grid: tuple[int, int], *, method: str = "svd",
                      component: int | None = None, n_components: int = 3) -> np.ndarray:
    """Foreground score of every patch: the chosen component after the sign rule.

    Parameters
    ----------
    tokens : ndarray of shape (n_images, h*w, dim)
    grid : (h, w)
    method : {"svd", "pca"}, default="svd"
    component : int, optional
        Which component is the foreground. Default: 1 for ``"svd"`` (index 0 is the mean direction),
        0 for ``"pca"`` (centring removes the mean), as in the reference.
    n_components : int, default=3

    Returns
    -------
    ndarray of shape (n_images, h, w)
    """
    tokens, h, w = _check_tokens(tokens, grid)
    if component is None:
        component = 1 if method == "svd" else 0
    comps = apply_sign_rule(
        decompose_tokens(tokens.reshape(-1, tokens.shape[-1]), method=method,
                         n_components=max(n_components, component + 1))
    )
    if component >= comps.shape[1]:
        raise ClipauditError(
            f"component={component} is not available: the tokens have only {comps.shape[1]} components."
        )
    return comps[:, component].reshape(tokens.shape[0], h, w)


def threshold_scores(scores: np.ndarray, *, by_negative: bool = True, threshold: float = 0.4) -> np.ndarray:
    """Patch-level foreground: ``score >= 0`` (default), or min-max scaled score ``>= threshold``.

    The min-max scaling (``by_negative=False``) is over all patches of all images, as the reference's
    ``MinMaxScaler`` over the pooled component.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if by_negative:
        return scores >= 0
    from sklearn.preprocessing import MinMaxScaler

    scaled = MinMaxScaler(clip=True).fit_transform(scores.reshape(-1, 1)).reshape(scores.shape)
    return scaled >= threshold


def largest_regions(mask: np.ndarray, *, min_second: int = 5) -> np.ndarray:
    """Keep the largest 8-connected region of a 2-D boolean mask, plus the second if it has ``>= min_second``
    cells. An empty mask stays empty."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    keep = labels == order[0] + 1
    if n > 1 and sizes[order[1]] >= min_second:
        keep |= labels == order[1] + 1
    return keep


def upsample_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (n, h, w) masks or label maps to (n, H, W), ``size = (H, W)``."""
    masks = np.asarray(masks)
    height, width = (int(s) for s in size)
    dtype = masks.dtype
    work = masks.astype(np.int32) if dtype == np.bool_ else masks
    out = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST) for m in work])
    return out.astype(dtype)


def foreground_masks(tokens: np.ndarray, grid: tuple[int, int], *, method: str = "svd",
                     component: int | None = None, by_negative: bool = True, threshold: float = 0.4,
                     min_second: int = 5) -> np.ndarray:
    """Patch-level foreground masks of a class's images (the whole §1.3 recipe except upsampling).

    Parameters
    ----------
    tokens : ndarray of shape (n_images, h*w, dim)
        Patch tokens of all images of one class (decomposed jointly).
    grid : (h, w)
        Patch grid; ``h * w`` must equal ``tokens.shape[1]``.
    method, component : see :func:`foreground_scores`.
    by_negative, threshold : see :func:`threshold_scores`.
    min_second : int, default=5
        The second-largest region is kept when it has at least this many patches.

    Returns
    -------
    ndarray of bool, shape (n_images, h, w)
        An image with no foreground patch gets an all-False mask (the reference returns a degenerate
        array there).

    Examples
    --------
    Tokens share a large common direction (as CLIP tokens do); 4 centre patches differ:

    >>> rng = np.random.default_rng(0)
    >>> common, fg, bg = 3 * rng.normal(size=8), rng.normal(size=8), rng.normal(size=8)
    >>> tok = np.tile(common + bg, (1, 16, 1)); tok[0, [5, 6, 9, 10]] = common + fg
    >>> foreground_masks(tok + 0.01 * rng.normal(size=tok.shape), (4, 4))[0].astype(int)
    array([[0, 0, 0, 0],
           [0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    """
    scores = foreground_scores(tokens, grid, method=method, component=component)
    patch = threshold_scores(scores, by_negative=by_negative, threshold=threshold)
    return np.stack([largest_regions(m, min_second=min_second) for m in patch])
