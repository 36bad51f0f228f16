"""Bounding boxes of boolean masks, shared by the engine's modules."""

from __future__ import annotations

import numpy as np

__all__ = ["bounding_box", "box_slices"]


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
