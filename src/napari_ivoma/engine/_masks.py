"""Small helpers on boolean masks shared by the engine's modules: bounding boxes, small holes,
pieces that stand still."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

__all__ = ["bounding_box", "box_slices", "fill_small_holes", "pieces", "still_pieces"]


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


def pieces(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The 8-connected pieces of ``mask``: (labels 1..n, 0 outside; sizes by label, index 0 the
    outside's; label of the largest piece (0 when there is none))."""
    lab, n = ndi.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    return lab, sizes, int(np.argmax(sizes[1:])) + 1 if n else 0


def still_pieces(lab: np.ndarray, sizes: np.ndarray, still: np.ndarray, share: float,
                 least: float) -> np.ndarray:
    """Per label of :func:`pieces` (index 0 never): at least ``share`` of the piece's pixels
    are ``still`` and it has at least ``least`` pixels."""
    n = len(sizes) - 1
    out = np.zeros(n + 1, bool)
    out[1:] = ndi.mean(still, lab, index=np.arange(1, n + 1)) >= share
    return out & (sizes >= least)
