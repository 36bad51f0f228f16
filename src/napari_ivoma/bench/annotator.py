"""A simulated annotator: decides which frame to scribble on and draws the strokes.

A stroke is drawn along the skeleton of a region, following its longest path,
the way a user draws a line through the middle of an object.

* Frame choice: the frame with the lowest mean J over the ground-truth objects
  (an object absent from both ground truth and prediction counts as 1), the
  first such frame on ties.  With an empty prediction every present object
  scores 0, so round 1 picks the frame where the most objects are present
  (the first of them on ties).
* Round 1 (:func:`first_round_scribbles`): one stroke per object present on
  the frame, along the skeleton of its (largest connected) region.
* Corrections (:func:`correction_scribbles`): for every label, background
  included, one stroke along the skeleton of the largest connected region
  where the ground truth has that label and the prediction does not (false
  negatives of an object get that object's id; false positives of any object,
  i.e. missing background, get a background stroke).  With
  ``every_region=True`` (DAVIS's interactive robot's rule) every region of that
  error mask that survives a morphological opening gets a stroke: the opening's
  radius is 0.075 times the square root of the error's area, at most 16 px,
  shrunk by 10% steps while it would remove everything.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.morphology import skeletonize

from napari_ivoma.engine.cpsm import largest_region
from napari_ivoma.engine.scribbles import Scribble

from .metrics import frame_object_j

__all__ = [
    "declare_objects",
    "largest_region",
    "skeleton_path",
    "worst_frame",
    "first_round_scribbles",
    "correction_scribbles",
    "opened_error_regions",
]

_EIGHT = np.ones((3, 3), dtype=bool)


def declare_objects(session, object_ids) -> None:
    """Name the ground truth's ids in ``session`` up front, as a user naming the objects of an
    experiment would, so that ids the engine gives automatically (proposed objects, daughters)
    never take an id the simulated annotator draws with later.  Sessions without
    ``name_object`` (other engines) are left alone."""
    if hasattr(session, "name_object"):
        for oid in object_ids:
            session.name_object(int(oid), f"object {int(oid)}")


def _longest_path(nodes: np.ndarray) -> np.ndarray:
    """Approximate longest geodesic path through an 8-connected pixel set (double sweep)."""
    n = len(nodes)
    if n == 1:
        return nodes.astype(float)
    rows, cols = nodes[:, 0], nodes[:, 1]
    index = np.full((rows.max() + 2, cols.max() + 3), -1, dtype=np.int64)
    index[rows, cols + 1] = np.arange(n)
    src, dst, wts = [], [], []
    for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
        j = index[rows + dr, cols + 1 + dc]
        ok = j >= 0
        src.append(np.flatnonzero(ok))
        dst.append(j[ok])
        wts.append(np.full(int(ok.sum()), float(np.hypot(dr, dc))))
    graph = coo_matrix(
        (np.concatenate(wts), (np.concatenate(src), np.concatenate(dst))), shape=(n, n)
    ).tocsr()
    dist = dijkstra(graph, directed=False, indices=0)
    dist[~np.isfinite(dist)] = -1
    a = int(np.argmax(dist))
    dist, pred = dijkstra(graph, directed=False, indices=a, return_predecessors=True)
    dist[~np.isfinite(dist)] = -1
    b = int(np.argmax(dist))
    path = [b]
    while path[-1] != a:
        path.append(int(pred[path[-1]]))
    return nodes[path[::-1]].astype(float)


def skeleton_path(region: np.ndarray) -> np.ndarray:
    """(N, 2) (row, col) points along the longest path of the skeleton of a region.

    The region should be one connected component (see :func:`largest_region`);
    otherwise the component holding the first skeleton pixel is used.  A region
    whose skeleton vanishes gives its innermost pixel (a click).

    Raises
    ------
    ValueError
        When the region is empty.
    """
    region = np.asarray(region, dtype=bool)
    if not region.any():
        raise ValueError("cannot draw a stroke in an empty region")
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    r0, c0 = max(rows[0] - 1, 0), max(cols[0] - 1, 0)
    crop = region[r0 : rows[-1] + 2, c0 : cols[-1] + 2]
    skel = skeletonize(crop)
    nodes = np.argwhere(skel)
    if len(nodes) == 0:
        dist = ndimage.distance_transform_edt(crop)
        nodes = np.array([np.unravel_index(int(np.argmax(dist)), crop.shape)])
    path = _longest_path(nodes)
    return path + np.array([r0, c0], dtype=float)


def worst_frame(gt: np.ndarray, pred: np.ndarray | None, n_objects: int) -> tuple[int, float]:
    """The frame with the lowest mean object J (first on ties) and that J.

    ``pred=None`` stands for an empty prediction (round 1).
    """
    gt = np.asarray(gt)
    scores = np.empty(gt.shape[0])
    for t in range(gt.shape[0]):
        p = np.zeros(gt.shape[1:], dtype=np.uint32) if pred is None else pred[t]
        scores[t] = frame_object_j(gt[t], p, n_objects).mean() if n_objects else 1.0
    t = int(np.argmin(scores))
    return t, float(scores[t])


def first_round_scribbles(gt_frame: np.ndarray, object_ids: list[int]) -> list[Scribble]:
    """One stroke per object present on the frame, along the skeleton of its largest region."""
    gt_frame = np.asarray(gt_frame)
    out: list[Scribble] = []
    for oid in object_ids:
        region = gt_frame == oid
        if region.any():
            out.append(Scribble(int(oid), skeleton_path(largest_region(region))))
    return out


def opened_error_regions(error: np.ndarray) -> list[np.ndarray]:
    """The 8-connected regions of an error mask after the opening of DAVIS's interactive robot
    (radius ``min(0.075 * sqrt(area), 16)`` px, shrunk by 10% steps while nothing would be left;
    no opening below 1 px), largest first."""
    error = np.asarray(error, dtype=bool)
    if not error.any():
        return []
    radius = min(0.075 * np.sqrt(np.count_nonzero(error)), 16.0)
    while radius > 1.0:
        d = 2 * int(round(radius)) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
        opened = cv2.morphologyEx(error.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
        if opened.any():
            break
        radius *= 0.9
    if radius <= 1.0:
        opened = error
    labels, n = ndimage.label(opened, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return [labels == (k + 1) for k in np.argsort(-sizes, kind="stable")]


def correction_scribbles(
    gt_frame: np.ndarray, pred_frame: np.ndarray, object_ids: list[int], min_pixels: int = 1,
    every_region: bool = False,
) -> list[Scribble]:
    """Corrective strokes on one frame: background first, then every object.

    For every label ``l`` in ``[0] + object_ids`` the largest connected region of
    ``(gt == l) & (pred != l)`` with at least ``min_pixels`` pixels gets a stroke
    with id ``l``; with ``every_region`` each of its :func:`opened_error_regions`
    does (DAVIS's robot).  Returns ``[]`` when there is nothing left to fix.
    """
    gt_frame = np.asarray(gt_frame)
    pred_frame = np.asarray(pred_frame)
    if gt_frame.shape != pred_frame.shape:
        raise ValueError(f"shape mismatch: ground truth {gt_frame.shape}, prediction {pred_frame.shape}")
    out: list[Scribble] = []
    for label in [0, *object_ids]:
        missing = (gt_frame == label) & (pred_frame != label)
        if np.count_nonzero(missing) < min_pixels:
            continue
        if every_region:
            for region in opened_error_regions(missing):
                if np.count_nonzero(region) >= min_pixels:
                    out.append(Scribble(int(label), skeleton_path(region)))
            continue
        region = largest_region(missing)
        if np.count_nonzero(region) < min_pixels:
            continue
        out.append(Scribble(int(label), skeleton_path(region)))
    return out
