"""Scribbles: user strokes, control points sampled along them, and their raster.

A scribble is a polyline of (row, col) points drawn by the user with one object
id (0 = background).  CPSM works from *control points*: points sampled evenly
by arc length along every scribble (Le et al., AAAI-21, "control-points
extractor").  Every control point is a hard constraint of the segmentation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Scribble",
    "control_points",
    "rasterize_scribbles",
    "clip_scribble",
    "NO_LABEL",
    "MAX_OBJECT_ID",
]

#: value of a pixel of a constraint raster that no scribble covers
NO_LABEL = -1
#: the largest object id (constraint rasters are int32)
MAX_OBJECT_ID = int(np.iinfo(np.int32).max)


@dataclass(frozen=True)
class Scribble:
    """One user stroke.

    Parameters
    ----------
    object_id : int
        0 for background, 1, 2, ... for objects.  A new id creates a new object.
    points : (N, 2) array of float
        (row, col) pixel coordinates along the stroke; N == 1 is a click.
    """

    object_id: int
    points: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        oid = self.object_id
        if isinstance(oid, bool) or not isinstance(oid, (int, np.integer)):
            if isinstance(oid, (float, np.floating)) and float(oid).is_integer():
                object.__setattr__(self, "object_id", int(oid))
            else:
                raise TypeError(
                    f"Scribble object_id must be an integer (0 = background, 1, 2, ... objects), "
                    f"got {oid!r} of type {type(oid).__name__}"
                )
        if int(self.object_id) < 0:
            raise ValueError(
                f"Scribble object_id must be >= 0 (0 = background, 1, 2, ... objects), got {oid}"
            )
        if int(self.object_id) > MAX_OBJECT_ID:
            raise ValueError(f"Scribble object_id must be at most {MAX_OBJECT_ID}, got {oid}")
        object.__setattr__(self, "object_id", int(self.object_id))
        pts = np.asarray(self.points, dtype=float)
        if pts.ndim == 1 and pts.size == 2:
            pts = pts.reshape(1, 2)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(
                f"Scribble points must be an (N, 2) array of (row, col) coordinates, got shape {pts.shape}"
            )
        if len(pts) == 0:
            raise ValueError("Scribble has no points: a stroke needs at least one (row, col) point")
        if not np.all(np.isfinite(pts)):
            raise ValueError("Scribble points contain NaN or infinite coordinates")
        pts.setflags(write=False)
        object.__setattr__(self, "points", pts)

    def to_dict(self) -> dict:
        """JSON-friendly form (used by the mask store)."""
        return {"object_id": self.object_id, "points": np.round(self.points, 2).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Scribble:
        return cls(int(d["object_id"]), np.asarray(d["points"], dtype=float))


def _densify(points: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points every ``step`` pixels along the polyline through ``points``."""
    if len(points) == 1:
        return points.copy()
    seg = np.diff(points, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    n = np.maximum(np.ceil(seglen / step).astype(np.int64), 1)  # points per segment
    which = np.repeat(np.arange(len(seg)), n)
    k = np.arange(1, which.size + 1) - np.repeat(np.cumsum(n) - n, n)  # 1..n within each segment
    t = (k / n[which])[:, None]
    return np.concatenate([points[:1], points[:-1][which] + t * seg[which]], axis=0)


def clip_scribble(scribble: Scribble, shape: tuple[int, int]) -> Scribble | None:
    """Clip a stroke to the frame; ``None`` (with a warning) when it lies wholly outside.

    The polyline is densified first, so the part of a stroke that crosses the
    frame is kept even when its vertices lie outside.
    """
    h, w = shape
    dense = _densify(scribble.points)
    inside = (
        (dense[:, 0] >= -0.5) & (dense[:, 0] <= h - 0.5) & (dense[:, 1] >= -0.5) & (dense[:, 1] <= w - 0.5)
    )
    if not inside.any():
        warnings.warn(
            f"scribble of object {scribble.object_id} lies entirely outside the {h}x{w} frame; dropped",
            stacklevel=3,
        )
        return None
    if inside.all():
        return scribble
    pts = dense[inside]
    pts[:, 0] = np.clip(pts[:, 0], 0, h - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, w - 1)
    return Scribble(scribble.object_id, pts)


def control_points(scribble: Scribble, spacing: float = 4.0) -> np.ndarray:
    """Sample control points evenly by arc length along a scribble.

    Parameters
    ----------
    scribble : Scribble
    spacing : float
        Distance in pixels between consecutive control points.

    Returns
    -------
    (M, 2) float array of (row, col); the first and last stroke points are always included.
    """
    pts = scribble.points
    if len(pts) == 1:
        return pts.copy()
    seg = np.diff(pts, axis=0)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
    total = cum[-1]
    if total == 0:
        return pts[:1].copy()
    n = max(int(np.floor(total / spacing)), 1)
    s = np.linspace(0.0, total, n + 1)
    r = np.interp(s, cum, pts[:, 0])
    c = np.interp(s, cum, pts[:, 1])
    return np.stack([r, c], axis=1)


def rasterize_scribbles(
    scribbles: list[Scribble], shape: tuple[int, int], radius: int = 1
) -> np.ndarray:
    """Paint scribbles into a constraint raster.

    Parameters
    ----------
    scribbles : list of Scribble
        In drawing order: where strokes of two ids cross, the later stroke wins.
    shape : (H, W)
    radius : int
        Half-width of the painted stroke in pixels (0 = one-pixel line).

    Returns
    -------
    (H, W) int32 array: ``NO_LABEL`` (-1) where no stroke passes, otherwise the object id.
    """
    h, w = shape
    out = np.full((h, w), NO_LABEL, dtype=np.int32)
    offs = [
        (dr, dc)
        for dr in range(-radius, radius + 1)
        for dc in range(-radius, radius + 1)
        if dr * dr + dc * dc <= radius * radius
    ]
    for s in scribbles:
        dense = np.rint(_densify(s.points)).astype(np.int64)
        for dr, dc in offs:
            r = dense[:, 0] + dr
            c = dense[:, 1] + dc
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            out[r[ok], c[ok]] = s.object_id
    return out
