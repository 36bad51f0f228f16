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
    "paint_scribble",
    "disc_offsets",
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
    width : float or (N,) array of float, optional
        Width in pixels of a painted stroke (a brush), one for the whole stroke or one per
        point (linear in between): every pixel within half the width of the polyline is the
        stroke's, a hard constraint like the line itself.  0 (the default) is a thin line.
    """

    object_id: int
    points: np.ndarray = field(repr=False)
    width: float | np.ndarray = field(default=0.0, repr=False)

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
        try:
            width = np.asarray(self.width, dtype=float)
        except (TypeError, ValueError):
            width = np.array(np.nan)
        if width.ndim not in (0, 1) or (width.ndim == 1 and width.shape != (len(pts),)) \
                or not np.all(np.isfinite(width)) or np.any(width < 0):
            raise ValueError(
                f"Scribble width must be a finite number of pixels >= 0, or one per point "
                f"({len(pts)}), got {self.width!r}"
            )
        if width.ndim == 0:
            object.__setattr__(self, "width", float(width))
        else:
            width.setflags(write=False)
            object.__setattr__(self, "width", width)

    @property
    def radii(self) -> np.ndarray:
        """(N,) half-widths along the stroke (zeros for a thin line)."""
        return np.broadcast_to(np.asarray(self.width, dtype=float) / 2.0, (len(self.points),))

    @property
    def radius(self) -> float:
        """The largest half-width (0 for a thin line)."""
        return float(np.max(self.width)) / 2.0

    def to_dict(self) -> dict:
        """JSON-friendly form (used by the mask store)."""
        d = {"object_id": self.object_id, "points": np.round(self.points, 2).tolist()}
        if np.any(np.asarray(self.width) > 0):
            d["width"] = round(self.width, 2) if np.ndim(self.width) == 0 else np.round(self.width, 2).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Scribble:
        return cls(int(d["object_id"]), np.asarray(d["points"], dtype=float), d.get("width", 0.0))


def _densify(points: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points every ``step`` pixels along the polyline through ``points`` (rows of (row, col,
    ...): further columns are interpolated along)."""
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
    dense = _densify(np.column_stack([scribble.points, scribble.radii]))
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
    pts = dense[inside, :2]
    pts[:, 0] = np.clip(pts[:, 0], 0, h - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, w - 1)
    width = scribble.width if np.ndim(scribble.width) == 0 else 2.0 * dense[inside, 2]
    return Scribble(scribble.object_id, pts, width)


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
        Half-width of the painted stroke in pixels (0 = one-pixel line); a painted stroke
        (``Scribble.width``) covers its own width when that is wider.

    Returns
    -------
    (H, W) int32 array: ``NO_LABEL`` (-1) where no stroke passes, otherwise the object id.
    """
    out = np.full(shape, NO_LABEL, dtype=np.int32)
    for s in scribbles:
        paint_scribble(out, s, radius)
    return out


def paint_scribble(out: np.ndarray, scribble: Scribble, radius: float = 1) -> None:
    """Set ``out`` to the scribble's id along it, ``radius`` px wide on each side or its own
    width where that is wider (see :func:`rasterize_scribbles`)."""
    s = scribble
    if s.radius <= radius:  # a line (the same pixels as a stroke of constant width)
        paint_disc_path(out, _densify(s.points), float(radius), s.object_id)
        return
    dense = _densify(np.column_stack([s.points, s.radii]))
    reach = np.maximum(np.ceil(dense[:, 2] * 4.0) / 4.0, float(radius))  # (in quarter pixels)
    for r in np.unique(reach):
        paint_disc_path(out, dense[reach == r, :2], float(r), s.object_id)


def disc_offsets(radius: float) -> np.ndarray:
    """(K, 2) integer offsets of the pixels within ``radius`` of a pixel (itself included)."""
    r = int(np.floor(radius))
    dr, dc = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dr * dr + dc * dc <= radius * radius + 1e-9
    return np.stack([dr[keep], dc[keep]], axis=1)


def paint_disc_path(out: np.ndarray, points: np.ndarray, radius: float, value: int) -> None:
    """Set ``out`` to ``value`` within ``radius`` of every (row, col) point (rounded)."""
    h, w = out.shape
    pts = np.unique(np.rint(points).astype(np.int64), axis=0)
    for dr, dc in disc_offsets(radius):
        r = pts[:, 0] + dr
        c = pts[:, 1] + dc
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        out[r[ok], c[ok]] = value
