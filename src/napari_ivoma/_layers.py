"""Small conversions between napari layers and the engine (no Qt, no widgets).

Shapes -> :class:`~napari_ivoma.engine.Scribble`, Labels paint events -> edited frames,
default store paths, colours of object ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Scribble

__all__ = [
    "BACKGROUND_COLOUR",
    "default_store_path",
    "shape_outline",
    "shapes_on_frame",
    "scribbles_from_shapes",
    "scribbles_from_brush",
    "frames_in_paint_event",
]

#: edge colour of background (object id 0) scribbles
BACKGROUND_COLOUR = "#ffffff"
STORE_SUFFIX = ".ivoma.zarr"


def default_store_path(source: str | os.PathLike | None, name: str,
                       home: str | os.PathLike | None = None) -> Path:
    """Where to keep the masks of a video by default.

    ``<source>.ivoma.zarr`` next to the source when its folder is writable, else
    ``~/napari-ivoma/<name>.ivoma.zarr``.
    """
    if source:
        src = Path(source)
        candidate = src.parent / (src.name.rstrip("/") + STORE_SUFFIX)
        if os.access(src.parent, os.W_OK):
            return candidate
        name = src.name
    base = Path(home) if home is not None else Path.home()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "video"
    return base / "napari-ivoma" / (safe + STORE_SUFFIX)


def shape_outline(points: np.ndarray, shape_type: str, n_ellipse: int = 64) -> np.ndarray:
    """(N, 2) stroke of one shape: path/line vertices, closed outline of the others."""
    pts = np.asarray(points, dtype=float)[:, -2:]
    if shape_type in ("path", "line") or len(pts) < 3:
        return pts
    if shape_type == "ellipse":
        centre = pts.mean(axis=0)
        u = (pts[1] + pts[2]) / 2 - centre
        w = (pts[0] + pts[1]) / 2 - centre
        theta = np.linspace(0.0, 2 * np.pi, n_ellipse + 1)[:, None]
        return centre + np.cos(theta) * u + np.sin(theta) * w
    return np.concatenate([pts, pts[:1]], axis=0)  # polygon, rectangle: closed outline


def shapes_on_frame(data: list[np.ndarray], t: int) -> list[int]:
    """Indices of shapes drawn on frame ``t`` (first coordinate rounds to ``t``; 2D shapes: all)."""
    out = []
    for i, pts in enumerate(data):
        pts = np.asarray(pts)
        if pts.shape[1] <= 2 or int(np.rint(pts[0, 0])) == int(t):
            out.append(i)
    return out


def scribbles_from_shapes(layer: Any, t: int) -> tuple[list[Scribble], list[int]]:
    """Scribbles of the shapes of ``layer`` on frame ``t`` and their indices in the layer.

    The object id of a shape is its ``object_id`` feature.
    """
    idx = shapes_on_frame(list(layer.data), t)
    if not idx:
        return [], []
    if "object_id" not in layer.features:
        raise ValueError(f"the shapes layer {layer.name!r} has no 'object_id' feature")
    ids = np.asarray(layer.features["object_id"])
    scribbles = [
        Scribble(int(ids[i]), shape_outline(layer.data[i], layer.shape_type[i])) for i in idx
    ]
    return scribbles, idx


def scribbles_from_brush(painted: np.ndarray, max_points: int = 400) -> list[Scribble]:
    """One Scribble per painted connected component of one brush-layer frame.

    ``painted`` holds object ids + 1 (0 = unpainted, 1 = background, 2 = object 1, ...);
    the points of a component are its skeleton pixels (all pixels for thin strokes).
    """
    from skimage.measure import label as connected
    from skimage.morphology import skeletonize

    out: list[Scribble] = []
    arr = np.asarray(painted)
    for value in np.unique(arr):
        if value == 0:
            continue
        comps = connected(arr == value, connectivity=2)
        for c in range(1, comps.max() + 1):
            mask = comps == c
            skel = skeletonize(mask)
            rc = np.argwhere(skel if skel.any() else mask).astype(float)
            if len(rc) > max_points:
                rc = rc[np.linspace(0, len(rc) - 1, max_points).astype(int)]
            out.append(Scribble(int(value) - 1, rc))
    return out


def frames_in_paint_event(item: Iterable, fallback: int | None = None) -> set[int]:
    """Frame indices touched by one Labels ``paint`` event value (a list of history atoms)."""
    frames: set[int] = set()
    for atom in item or []:
        key = getattr(atom, "slice_key", None)
        if key is not None:  # masked atom: bounding box of basic slices
            s = key[0]
            if isinstance(s, slice):
                frames.update(range(s.start or 0, s.stop if s.stop is not None else (s.start or 0) + 1))
            else:
                frames.add(int(s))
            continue
        try:
            indices = atom[0]
            first = np.asarray(indices[0])
            frames.update(int(v) for v in np.unique(first))
        except (TypeError, IndexError):
            if fallback is not None:
                frames.add(int(fallback))
    if not frames and fallback is not None:
        frames.add(int(fallback))
    return frames
