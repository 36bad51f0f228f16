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
    "BRUSH_BACKGROUND",
    "default_store_path",
    "shape_outline",
    "shapes_on_frame",
    "scribbles_from_shapes",
    "scribbles_from_brush",
    "skeleton_chains",
    "frames_before_paint",
    "frames_in_paint_event",
]

#: edge colour of background (object id 0) scribbles
BACKGROUND_COLOUR = "#ffffff"
#: value painted on the scribble brush layer for background strokes (object ids are painted as
#: themselves, 0 erases); object ids therefore stay below it
BRUSH_BACKGROUND = 65535
STORE_SUFFIX = ".ivoma.zarr"


def default_store_path(source: str | os.PathLike | None, name: str,
                       home: str | os.PathLike | None = None, channel: int | None = None) -> Path:
    """Where to keep the masks of a video by default.

    ``<source>.ivoma.zarr`` next to the source when its folder is writable, else
    ``~/napari-ivoma/<name>.ivoma.zarr``; one channel of a multi-channel stack has its own
    (``<source>.channel<k>.ivoma.zarr``).
    """
    tail = ("" if channel is None else f".channel{int(channel)}") + STORE_SUFFIX
    if source:
        src = Path(source)
        candidate = src.parent / (src.name.rstrip("/") + tail)
        if os.access(src.parent, os.W_OK):
            return candidate
        name = src.name
    base = Path(home) if home is not None else Path.home()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "video"
    return base / "napari-ivoma" / (safe + tail)


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


def scribbles_from_brush(painted: np.ndarray, background_value: int = BRUSH_BACKGROUND,
                         max_points: int = 400) -> list[Scribble]:
    """Scribbles of one painted frame of the scribble brush layer.

    ``painted`` holds object ids as painted (0 = unpainted, ``k`` = object ``k``) and
    ``background_value`` for background strokes (object id 0).  Every painted connected component
    is thinned to its skeleton, and the skeleton is cut into chains of neighbouring pixels: one
    Scribble (a polyline) per chain, so no segment of a polyline jumps across the frame.  Each
    chain's ``width`` reaches every painted pixel nearest to it, so every painted pixel stays a
    hard constraint (a thick brush stroke is more than its centre line).
    """
    from scipy import ndimage as ndi
    from skimage.measure import label as connected
    from skimage.morphology import skeletonize

    out: list[Scribble] = []
    arr = np.asarray(painted)
    if arr.ndim != 2:
        raise ValueError(f"the scribble brush must be one (H, W) frame, got shape {arr.shape}")
    for value in np.unique(arr):
        if value == 0:
            continue
        object_id = 0 if int(value) == int(background_value) else int(value)
        comps = connected(arr == value, connectivity=2)
        for c, box in enumerate(ndi.find_objects(comps), start=1):
            # (in the component's box, one pixel wider so that the skeleton sees its border)
            box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
            mask = comps[box] == c
            skel = skeletonize(mask)
            rc = np.argwhere(skel if skel.any() else mask)
            chains = skeleton_chains(rc)
            top_left = np.array([box[0].start, box[1].start])
            chains = _drawn_to_the_tips(mask, chains)
            for chain, radii in zip(chains, _chain_radii(mask, chains)):
                if len(chain) > max_points:  # (each kept point takes the widest of those it stands for)
                    keep = np.linspace(0, len(chain) - 1, max_points).astype(int)
                    starts = np.concatenate([[0], (keep[:-1] + keep[1:]) // 2 + 1])
                    chain, radii = chain[keep], np.maximum.reduceat(radii, starts)
                width = 2.0 * radii if radii.max() > 1.0 else 0.0  # (a thin stroke stays a line)
                out.append(Scribble(object_id, (chain + top_left).astype(float), width))
    return out


def _drawn_to_the_tips(mask: np.ndarray, chains: list[np.ndarray]) -> list[np.ndarray]:
    """Chains drawn on from each free end toward the farthest painted pixel beyond it, to a
    radius short of it: a skeleton stops short of a round brush end, and the end's disc would
    otherwise bulge sideways to reach the tip."""
    nearest = _nearest_chain_pixels(mask, chains)
    radii = _chain_radii(mask, chains, nearest)
    rows, cols, near_r, near_c, _ = nearest
    ends = {}
    for i, chain in enumerate(chains):
        for j in (0, -1):
            ends.setdefault(tuple(chain[j]), []).append((i, j))
    out = [c for c in chains]
    for (r0, c0), owners in ends.items():
        if len(owners) != 1 or any(len(chains[i]) < 3 for i, _ in owners):
            continue  # (a junction, or a dot: nothing to draw on)
        i, j = owners[0]
        tip = (near_r == r0) & (near_c == c0)
        if not tip.any():
            continue
        d = np.hypot(rows[tip] - r0, cols[tip] - c0)
        side = float(np.median(radii[i][1:4] if j == 0 else radii[i][-4:-1]))
        k = int(np.argmax(d))
        if d[k] <= side + 1.0:
            continue
        far = np.array([rows[tip][k], cols[tip][k]], float)
        n = int(np.floor(d[k] - side))
        step = (far - np.array([r0, c0], float)) / d[k]
        more = np.rint(np.array([r0, c0], float) + step * np.arange(1, n + 1)[:, None]).astype(np.int64)
        inside = mask[more[:, 0], more[:, 1]]
        more = more[: len(more) if inside.all() else int(np.argmin(inside))]  # (never across unpainted pixels)
        if len(more):
            out[i] = np.vstack([more[::-1], out[i]]) if j == 0 else np.vstack([out[i], more])
    return out


def _nearest_chain_pixels(mask: np.ndarray, chains: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """For every ``mask`` pixel: its (row, col), the (row, col) of the nearest chain pixel and
    the distance to it."""
    from scipy import ndimage as ndi

    on_chain = np.zeros(mask.shape, bool)
    for chain in chains:
        on_chain[chain[:, 0], chain[:, 1]] = True
    dist, (ir, ic) = ndi.distance_transform_edt(~on_chain, return_indices=True)
    rows, cols = np.nonzero(mask)
    return rows, cols, ir[rows, cols], ic[rows, cols], dist[rows, cols]


def _chain_radii(mask: np.ndarray, chains: list[np.ndarray], nearest: tuple | None = None) -> list[np.ndarray]:
    """Per chain of skeleton pixels: at each of its pixels, the farthest distance of the
    ``mask`` pixels nearest to it (0 where none is): discs of these radii along the chains cover
    every pixel of ``mask``, and little beyond it.  ``nearest``: :func:`_nearest_chain_pixels`
    of these chains, when the caller has it."""
    _, _, near_r, near_c, dist = _nearest_chain_pixels(mask, chains) if nearest is None else nearest
    index = np.full(mask.shape, -1, np.int64)
    flat = np.concatenate(chains) if chains else np.zeros((0, 2), np.int64)
    index[flat[:, 0], flat[:, 1]] = np.arange(len(flat))  # (a pixel shared by chains: the last)
    reach = np.zeros(len(flat))
    np.maximum.at(reach, index[near_r, near_c], dist)
    # a pixel shared by chains gives its reach to each of them
    reach = reach[index[flat[:, 0], flat[:, 1]]]
    bounds = np.cumsum([0] + [len(c) for c in chains])
    return [reach[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def skeleton_chains(pixels: np.ndarray) -> list[np.ndarray]:
    """Cut a set of (row, col) pixels into polylines of 8-connected neighbours.

    Walks from an end pixel (fewest neighbours) to unvisited neighbours; a branch starts a new
    chain at the pixel it leaves from, so every chain is drawn without jumps.
    """
    pts = [tuple(int(v) for v in p) for p in np.asarray(pixels).reshape(-1, 2)]
    todo = set(pts)
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]

    def neighbours(p, among):
        return [(p[0] + dr, p[1] + dc) for dr, dc in offsets if (p[0] + dr, p[1] + dc) in among]

    chains: list[np.ndarray] = []
    visited: set[tuple[int, int]] = set()
    while todo:
        # start next to what is done (a branch) or, failing that, at an end of a new piece
        start = next((q for p in visited for q in neighbours(p, todo)), None)
        anchor = None
        if start is not None:
            anchor = next(p for p in neighbours(start, visited))
        else:
            start = min(todo, key=lambda p: (len(neighbours(p, todo)), p))
        chain = [anchor] if anchor is not None else []
        p = start
        while p is not None:
            chain.append(p)
            todo.discard(p)
            visited.add(p)
            nxt = neighbours(p, todo)
            # prefer 4-neighbours so diagonal shortcuts do not skip pixels
            p = min(nxt, key=lambda q: abs(q[0] - chain[-1][0]) + abs(q[1] - chain[-1][1])) if nxt else None
        chains.append(np.array(chain, dtype=np.int64))
    return chains


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


def frames_before_paint(item: Iterable, frames: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """What frames held before one Labels ``paint`` event of a (T, H, W) layer.

    Parameters
    ----------
    item : list of history atoms
        The event's value: napari's masked atoms (``slice_key``, ``mask``, ``old_values``) or
        ``(indices, old_values, new_values)`` tuples, in the order they were applied.
    frames : dict t -> (H, W) array
        The frames as they are now (after the edit); copied, not modified.

    Returns
    -------
    dict t -> (H, W) array: the frames with the edit taken back (atoms undone last to first).
    """
    out = {t: np.array(f, copy=True) for t, f in frames.items()}
    for atom in reversed(list(item or [])):
        key = getattr(atom, "slice_key", None)
        if key is not None:
            _undo_masked_atom(out, atom, key)
            continue
        indices, old, _new = atom
        t_idx = np.asarray(indices[0])
        old = np.broadcast_to(np.asarray(old), t_idx.shape)
        for t in np.unique(t_idx):
            if int(t) in out:
                sel = t_idx == t
                out[int(t)][np.asarray(indices[1])[sel], np.asarray(indices[2])[sel]] = old[sel]
    return out


def _undo_masked_atom(out: dict[int, np.ndarray], atom: Any, key: tuple) -> None:
    t_slice, spatial = key[0], tuple(key[1:])
    t0 = t_slice.start or 0
    t1 = t_slice.stop if t_slice.stop is not None else t0 + 1
    old = np.asarray(atom.old_values)
    if atom.mask is None:  # the whole box changed: old values are the box
        for i, t in enumerate(range(t0, t1)):
            if t in out:
                out[t][spatial] = old[i]
        return
    mask = np.asarray(atom.mask).reshape((t1 - t0,) + np.asarray(atom.mask).shape[-2:])
    counts = np.concatenate([[0], np.cumsum(mask.reshape(t1 - t0, -1).sum(axis=1))])
    for i, t in enumerate(range(t0, t1)):
        if t in out:
            region = out[t][spatial]
            region[mask[i]] = old[counts[i]:counts[i + 1]]
