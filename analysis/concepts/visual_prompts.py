"""Visual prompts for a concept region (spec §1.6): a red ellipse fitted to the region's largest contour,
drawn on the image, on a grey-outside copy and on a blur-outside copy.

Differences from the reference, on purpose:

- a contour with fewer than 5 points (``cv2.fitEllipse`` needs 5) gets the ellipse inscribed in its
  bounding box instead of the reference's *random* extra points, so prompts are deterministic;
- the ellipse is shrunk about its (clamped) centre until its bounding box lies inside the image, so the
  whole outline is visible (the reference may draw partly off-image).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .._checks import ClipauditError

__all__ = ["Ellipse", "PROMPT_VARIANTS", "fit_ellipse", "fit_inside", "draw_prompts", "concept_prompts"]

PROMPT_VARIANTS = ("ellipse", "grey_outside", "blur_outside")
RED = (255, 0, 0)


@dataclass(frozen=True)
class Ellipse:
    """An OpenCV rotated ellipse: centre (x, y), full axes (width, height), angle in degrees."""

    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float

    def extent(self) -> tuple[float, float]:
        """Half-width and half-height of the axis-aligned bounding box."""
        a, b = self.axes[0] / 2, self.axes[1] / 2
        t = np.deg2rad(self.angle)
        return (float(np.hypot(a * np.cos(t), b * np.sin(t))), float(np.hypot(a * np.sin(t), b * np.cos(t))))

    def cv(self) -> tuple[tuple[int, int], tuple[int, int], int]:
        """Integer (center, half-axes, angle) for ``cv2.ellipse``."""
        return ((int(round(self.center[0])), int(round(self.center[1]))),
                (max(int(round(self.axes[0] / 2)), 1), max(int(round(self.axes[1] / 2)), 1)),
                int(round(self.angle)))


def fit_ellipse(region: np.ndarray) -> Ellipse | None:
    """Ellipse fitted to the largest external contour of a boolean region (None if the region is empty)."""
    region = np.asarray(region, dtype=np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    if len(contour) >= 5:
        (cx, cy), (w, h), angle = cv2.fitEllipse(contour)
    else:
        x, y, w, h = cv2.boundingRect(contour)
        cx, cy, angle = x + (w - 1) / 2, y + (h - 1) / 2, 0.0
    if not np.all(np.isfinite([cx, cy, w, h, angle])):
        x, y, w, h = cv2.boundingRect(contour)
        cx, cy, angle = x + (w - 1) / 2, y + (h - 1) / 2, 0.0
    return Ellipse((float(cx), float(cy)), (max(float(w), 2.0), max(float(h), 2.0)), float(angle))


def fit_inside(ellipse: Ellipse, size: tuple[int, int], margin: float = 1.0) -> Ellipse:
    """Clamp the centre into the image and shrink the axes so the outline stays inside ``size = (H, W)``."""
    height, width = size
    lo = margin + 1.0
    cx = float(np.clip(ellipse.center[0], lo, max(width - 1 - lo, lo)))
    cy = float(np.clip(ellipse.center[1], lo, max(height - 1 - lo, lo)))
    ex, ey = ellipse.extent()
    room_x = min(cx, width - 1 - cx) - margin
    room_y = min(cy, height - 1 - cy) - margin
    scale = min(1.0, room_x / max(ex, 1e-9), room_y / max(ey, 1e-9))
    scale = max(scale, 0.0)
    axes = (max(ellipse.axes[0] * scale, 2.0), max(ellipse.axes[1] * scale, 2.0))
    return Ellipse((cx, cy), axes, ellipse.angle)


def draw_prompts(image: np.ndarray, ellipse: Ellipse, *, thickness: int = 1, blur_kernel: int = 11
                 ) -> np.ndarray:
    """The three prompted copies of ``image`` for one ellipse.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W, 3), RGB
    ellipse : Ellipse
    thickness : int, default=1
    blur_kernel : int, default=11
        Gaussian kernel size for the blur-outside variant (sigma 0: OpenCV derives 2.0 for 11).

    Returns
    -------
    ndarray of uint8, shape (3, H, W, 3)
        In :data:`PROMPT_VARIANTS` order: red ellipse; grey outside + ellipse; blur outside + ellipse.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ClipauditError(f"image must be an RGB array (H, W, 3), got shape {image.shape}.")
    center, axes, angle = ellipse.cv()
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.ellipse(inside, center, axes, angle, 0, 360, 1, thickness=-1)
    inside = inside.astype(bool)[..., None]
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    blur = cv2.GaussianBlur(image, (blur_kernel, blur_kernel), 0)
    out = []
    for outside in (image, grey, blur):
        canvas = np.ascontiguousarray(np.where(inside, image, outside))
        cv2.ellipse(canvas, center, axes, angle, 0, 360, RED, thickness=thickness)
        out.append(canvas)
    return np.stack(out)


def concept_prompts(image: np.ndarray, label_map: np.ndarray, *, thickness: int = 1
                    ) -> tuple[list[int], np.ndarray]:
    """Prompts for every concept present in one image's pixel label map.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W, 3)
    label_map : ndarray of int, shape (H, W)
        Concept id per pixel, -1 for background.

    Returns
    -------
    concepts : list of int
        Concept ids present, ascending.
    prompts : ndarray of uint8, shape (len(concepts), 3, H, W, 3)
    """
    label_map = np.asarray(label_map)
    if label_map.shape != np.asarray(image).shape[:2]:
        raise ClipauditError(f"label_map shape {label_map.shape} differs from the image's {image.shape[:2]}.")
    concepts, prompts = [], []
    for c in np.unique(label_map[label_map >= 0]).tolist():
        ellipse = fit_ellipse(label_map == c)
        if ellipse is None:
            continue
        concepts.append(int(c))
        prompts.append(draw_prompts(image, fit_inside(ellipse, label_map.shape), thickness=thickness))
    empty = np.zeros((0, 3, *np.asarray(image).shape), np.uint8)
    return concepts, (np.stack(prompts) if prompts else empty)
