"""Video object segmentation scores: J (region IoU), F (boundary F-measure), J&F, CTC SEG.

Conventions (as in the DAVIS benchmark):

* J of one object on one frame is the IoU of its ground-truth and predicted
  regions; an object absent from both counts as 1.
* F compares the boundary maps of the two regions.  Boundary pixels are the
  pixels that differ from their right, lower or lower-right neighbour; a
  boundary pixel is matched when a boundary pixel of the other map lies within
  ``ceil(bound_th * image diagonal)`` pixels (disk dilation), ``bound_th = 0.008``.
* A sequence score is, per object, the mean over all frames, then the mean
  over objects; J&F is the mean of J and F.

SEG is the Cell Tracking Challenge segmentation score: every ground-truth object
is matched with the predicted object that covers more than half of it (identity
is ignored), its score is their Jaccard index (0 when nothing matches); SEG is
the mean over all ground-truth objects of all frames.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "BOUND_TH",
    "region_j",
    "boundary_map",
    "boundary_f",
    "tolerance_pixels",
    "frame_object_j",
    "frame_j",
    "sequence_scores",
    "seg_matches",
    "seg_score",
]

#: DAVIS boundary tolerance, as a fraction of the image diagonal
BOUND_TH = 0.008


def region_j(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask: pixels differing from the right, lower or lower-right neighbour.

    The last row is compared with its right neighbour only and the last column
    with its lower neighbour only (the bottom-right pixel is never a boundary),
    so the image border itself is not a boundary (as in the DAVIS benchmark).
    """
    m = np.asarray(mask, dtype=bool)
    right = np.zeros_like(m)
    down = np.zeros_like(m)
    diag = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    down[:-1, :] = m[1:, :]
    diag[:-1, :-1] = m[1:, 1:]
    b = (m ^ right) | (m ^ down) | (m ^ diag)
    b[-1, :] = m[-1, :] ^ right[-1, :]
    b[:, -1] = m[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def tolerance_pixels(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Matching distance in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)``."""
    if bound_th >= 1:
        return int(round(bound_th))
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


@lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius).astype(np.uint8)


def _dilate(b: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return b
    return cv2.dilate(b.astype(np.uint8), _disk(radius)).astype(bool)


def _crop_box(a: np.ndarray, b: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    """Bounding box of ``a | b`` grown by ``pad`` pixels (clipped to the image); None when both are empty."""
    rows = np.flatnonzero(a.any(axis=1) | b.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(a.any(axis=0) | b.any(axis=0))
    h, w = a.shape
    return (
        slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)),
        slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)),
    )


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two boolean masks (DAVIS F); 1.0 when both are empty.

    Precision is the share of predicted boundary pixels within the tolerance of
    the ground-truth boundary, recall the converse.  An empty prediction of a
    present object scores 0 (and so does a prediction of an absent one).
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: ground truth {gt.shape}, prediction {pred.shape}")
    radius = tolerance_pixels(gt.shape, bound_th)
    # Cropping is exact: the crop keeps >= radius + 2 background pixels around both masks
    # (background crop edges create no boundary), or reaches the true image border.
    box = _crop_box(gt, pred, radius + 2)
    if box is None:
        return 1.0
    gt_b = boundary_map(gt[box])
    pred_b = boundary_map(pred[box])
    n_gt = np.count_nonzero(gt_b)
    n_pred = np.count_nonzero(pred_b)
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    precision = np.count_nonzero(pred_b & _dilate(gt_b, radius)) / n_pred
    recall = np.count_nonzero(gt_b & _dilate(pred_b, radius)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def frame_object_j(gt: np.ndarray, pred: np.ndarray, n_objects: int) -> np.ndarray:
    """J of objects ``1..n_objects`` on one frame, as a (n_objects,) array (absent in both -> 1).

    Predicted ids above ``n_objects`` count as wrong labels (they lower the J of
    the objects they cover).
    """
    k = int(n_objects)
    g = np.asarray(gt).astype(np.int64).ravel()
    p = np.minimum(np.asarray(pred).astype(np.int64).ravel(), k + 1)
    table = np.bincount(g * (k + 2) + p, minlength=(k + 2) * (k + 2)).reshape(k + 2, k + 2)
    inter = np.diag(table)[1 : k + 1].astype(float)
    union = table[1 : k + 1].sum(axis=1) + table[:, 1 : k + 1].sum(axis=0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        j = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return j


def frame_j(gt: np.ndarray, pred: np.ndarray, n_objects: int) -> float:
    """Mean J over objects ``1..n_objects`` on one frame."""
    if n_objects < 1:
        return 1.0
    return float(frame_object_j(gt, pred, n_objects).mean())


def sequence_scores(
    gt: np.ndarray, pred: np.ndarray, n_objects: int, bound_th: float = BOUND_TH
) -> dict:
    """J, F and J&F of a (T, H, W) prediction against the (T, H, W) ground truth.

    Returns
    -------
    dict with ``J``, ``F``, ``JF`` (floats), ``J_per_object``, ``F_per_object``
    (lists, mean over frames) and ``J_per_frame`` (mean over objects, per frame).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: ground truth {gt.shape}, prediction {pred.shape}")
    t_count = gt.shape[0]
    j = np.ones((n_objects, t_count))
    f = np.ones((n_objects, t_count))
    for t in range(t_count):
        j[:, t] = frame_object_j(gt[t], pred[t], n_objects)
        for k in range(n_objects):
            g = gt[t] == k + 1
            p = pred[t] == k + 1
            f[k, t] = boundary_f(g, p, bound_th) if (g.any() or p.any()) else 1.0
    j_obj = j.mean(axis=1)
    f_obj = f.mean(axis=1)
    big_j = float(j_obj.mean()) if n_objects else 1.0
    big_f = float(f_obj.mean()) if n_objects else 1.0
    return {
        "J": big_j,
        "F": big_f,
        "JF": (big_j + big_f) / 2,
        "J_per_object": j_obj.tolist(),
        "F_per_object": f_obj.tolist(),
        "J_per_frame": j.mean(axis=0).tolist() if n_objects else [1.0] * t_count,
    }


def seg_matches(gt: np.ndarray, pred: np.ndarray) -> dict[int, float]:
    """CTC SEG Jaccard of every ground-truth object of one frame: ``{gt_id: jaccard}``.

    A ground-truth object R is matched with the predicted object S for which
    ``|R & S| > 0.5 |R|`` (at most one such S exists); unmatched objects score 0.
    """
    g = np.asarray(gt).astype(np.int64).ravel()
    p = np.asarray(pred).astype(np.int64).ravel()
    gt_ids, gt_sizes = np.unique(g[g > 0], return_counts=True)
    if gt_ids.size == 0:
        return {}
    pred_ids, pred_sizes = np.unique(p[p > 0], return_counts=True)
    pred_size = dict(zip(pred_ids.tolist(), pred_sizes.tolist()))
    both = (g > 0) & (p > 0)
    base = int(p.max()) + 1
    keys, overlaps = np.unique(g[both] * base + p[both], return_counts=True)
    out = {int(i): 0.0 for i in gt_ids}
    gt_size = dict(zip(gt_ids.tolist(), gt_sizes.tolist()))
    for key, n in zip(keys.tolist(), overlaps.tolist()):
        gi, pi = divmod(key, base)
        if n > 0.5 * gt_size[gi]:
            out[gi] = n / (gt_size[gi] + pred_size[pi] - n)
    return out


def seg_score(gt: np.ndarray, pred: np.ndarray) -> float | None:
    """CTC SEG of a (T, H, W) (or (H, W)) prediction; None when the ground truth has no object."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    scores: list[float] = []
    for t in range(gt.shape[0]):
        scores.extend(seg_matches(gt[t], pred[t]).values())
    return float(np.mean(scores)) if scores else None
