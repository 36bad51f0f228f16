"""Small helpers on boolean masks shared by the engine's modules: bounding boxes, small holes."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["bounding_box", "box_slices", "fill_small_holes"]


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[int, int, int, int] | None:
    """Box ``(r0, r1, c0, c1)`` (ends exclusive) of the True pixels of a 2-D ``mask``.

    Parameters
    ----------
    mask : (H, W) bool array.
    margin : pixels added on every side, clipped to the array.

    Returns
    -------
    The box, or None when ``mask`` has no True pixel.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, h),
            max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, w))


def box_slices(box: tuple[int, int, int, int]) -> tuple[slice, slice]:
    """Row and column slices of a box ``(r0, r1, c0, c1)``."""
    r0, r1, c0, c1 = box
    return slice(r0, r1), slice(c0, c1)


def fill_small_holes(mask: np.ndarray, max_share: float, blocked: np.ndarray | None = None) -> np.ndarray:
    """``mask`` with its holes (background it encloses, not touching the crop's edge, no
    ``blocked`` pixel in it: another object's core) smaller than ``max_share`` of its area filled."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    if n <= 2:
        return mask
    h, w = mask.shape
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    hole = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (area < max_share * mask.sum())
    if blocked is not None and hole.any():
        hole &= np.bincount(lab.ravel(), weights=blocked.ravel(), minlength=n)[1:] == 0
    return mask | np.concatenate([[False], hole])[lab] if hole.any() else mask
