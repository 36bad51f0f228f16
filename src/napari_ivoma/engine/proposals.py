"""Proposed objects: foreground that no object claims (e.g. cells entering the field).

After propagation, every frame's foreground is found with an intensity threshold learnt from
the user's reference frames (the threshold that best reproduces their masks; no proposals when
no threshold reproduces them well, e.g. objects that are not brighter or darker than their
surroundings).  Foreground blobs that no object claims, of an object's size, are linked from
frame to frame by overlap; a blob seen on enough consecutive frames becomes a *proposed object*:
a new id, marked ``proposal`` in the object table, written only where the frame has no label and
never on a user's reference frame.  One scribble names it (its id replaces the proposal's on
every frame) or dismisses it (a background scribble; the dismissal is remembered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ._masks import bounding_box, box_slices

__all__ = [
    "ForegroundModel",
    "learn_foreground",
    "unclaimed_blobs",
    "Blob",
    "link_blobs",
    "propose_objects",
]

_EIGHT = 8


@dataclass
class ForegroundModel:
    """Foreground = smoothed intensity on the object's side of ``threshold``."""

    threshold: float
    bright: bool          # objects brighter than the background (fluorescence) or darker
    sigma: float          # Gaussian smoothing (px) before thresholding
    min_area: int         # smallest blob proposed (px)
    max_area: int         # largest blob proposed (px)
    fit_iou: float        # IoU of the thresholded references with their masks

    def foreground(self, image: np.ndarray) -> np.ndarray:
        sm = _smoothed_grey(image, self.sigma)
        return sm > self.threshold if self.bright else sm < self.threshold


def _smoothed_grey(image: np.ndarray, sigma: float) -> np.ndarray:
    img = np.asarray(image, np.float32)
    grey = img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else (
        img.mean(axis=2) if img.ndim == 3 else img)
    return cv2.GaussianBlur(np.ascontiguousarray(grey), (0, 0), sigma) if sigma > 0 else grey


def learn_foreground(images: list[np.ndarray], labels: list[np.ndarray], sigma: float = 1.0,
                     min_iou: float = 0.6, min_share: float = 0.3,
                     max_share: float = 3.0) -> ForegroundModel | None:
    """The intensity threshold that best reproduces the reference masks.

    Parameters
    ----------
    images : (H, W, C) float images of the reference frames
    labels : their (H, W) label images (0 = background)
    sigma : smoothing before thresholding
    min_iou : no model (None) when the best threshold reproduces the reference masks with a
        lower IoU than this (measured within an object's radius of them: background farther
        away is unknown): the objects are not told apart by intensity.
    min_share, max_share : proposed blobs are between these multiples of the median object area.

    Returns
    -------
    ForegroundModel or None
    """
    values, truth, areas = [], [], []
    for image, lab in zip(images, labels):
        lab = np.asarray(lab)
        if not lab.any():
            continue
        sm = _smoothed_grey(image, sigma)
        ids, counts = np.unique(lab[lab > 0], return_counts=True)
        areas.extend(counts.tolist())
        # background is known only around the labelled objects: farther away may lie objects
        # nobody labelled yet (the very ones to propose)
        r = max(3, int(np.sqrt(np.median(counts) / np.pi)))
        near = cv2.dilate((lab > 0).astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        step = max(1, int(np.sqrt(near.sum() / 200_000)))
        sel = near[::step, ::step]
        values.append(sm[::step, ::step][sel])
        truth.append((lab[::step, ::step] > 0)[sel])
    if not values:
        return None
    v = np.concatenate(values)
    y = np.concatenate(truth)
    if y.all() or not y.any():
        return None
    order = np.argsort(v)
    v, y = v[order], y[order]
    n_fg = int(y.sum())
    # IoU of "value > thr" for every cut position, in one pass over the sorted values
    fg_above = n_fg - np.concatenate([[0], np.cumsum(y)])          # true positives above cut i
    n_above = len(v) - np.arange(len(v) + 1)                        # predicted positives
    iou_bright = fg_above / np.maximum(n_above + n_fg - fg_above, 1)
    fg_below = np.concatenate([[0], np.cumsum(y)])
    n_below = np.arange(len(v) + 1)
    iou_dark = fg_below / np.maximum(n_below + n_fg - fg_below, 1)
    ib, id_ = int(np.argmax(iou_bright)), int(np.argmax(iou_dark))
    bright = iou_bright[ib] >= iou_dark[id_]
    i = ib if bright else id_
    best = float(iou_bright[ib] if bright else iou_dark[id_])
    if best < min_iou or i in (0, len(v)):
        return None
    thr = float(0.5 * (v[i - 1] + v[i]))
    med = float(np.median(areas))
    return ForegroundModel(thr, bool(bright), sigma, max(12, int(min_share * med)),
                           int(max_share * max(areas)), best)


@dataclass
class Blob:
    """One unclaimed foreground blob of one frame."""

    t: int
    box: tuple[int, int, int, int]   # r0, r1, c0, c1
    mask: np.ndarray                 # bool, box-sized
    proposal: int = 0                # the proposal id it already carries (0 = new)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def unclaimed_blobs(t: int, image: np.ndarray, labels: np.ndarray, model: ForegroundModel,
                    margin: int = 2, max_contact: float = 0.5) -> list[Blob]:
    """Foreground blobs of frame ``t`` that no object claims.

    A blob is kept when its area is within the model's range and less than ``max_contact`` of
    its outline touches an object (a blob hugging an object is that object's missed edge, not
    a new object).
    """
    fg = model.foreground(image)
    claimed = cv2.dilate((labels > 0).astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) > 0
    free = (fg & ~claimed).astype(np.uint8)
    free = cv2.morphologyEx(free, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=_EIGHT)
    out = []
    for k in range(1, n):
        c0, r0, w, h, area = (int(x) for x in stats[k])
        if not model.min_area <= area <= model.max_area:
            continue
        box = (r0, r0 + h, c0, c0 + w)
        mask = lab[r0:r0 + h, c0:c0 + w] == k
        if max_contact < 1 and _contact_share(mask, box, claimed) > max_contact:
            continue
        out.append(Blob(t, box, mask))
    return out


def _contact_share(mask: np.ndarray, box, claimed: np.ndarray) -> float:
    """Share of a blob's outer outline lying on claimed pixels."""
    r0, r1, c0, c1 = box
    h, w = claimed.shape
    a0, a1, b0, b1 = max(0, r0 - 1), min(h, r1 + 1), max(0, c0 - 1), min(w, c1 + 1)
    big = np.zeros((a1 - a0, b1 - b0), np.uint8)
    big[r0 - a0:r1 - a0, c0 - b0:c1 - b0] = mask
    ring = (cv2.dilate(big, np.ones((3, 3), np.uint8)) > 0) & ~(big > 0)
    n = int(ring.sum())
    return 0.0 if n == 0 else float((ring & claimed[a0:a1, b0:b1]).sum() / n)


def _overlap(a: Blob, b: Blob) -> float:
    """Intersection over the smaller area of two blobs."""
    r0, r1 = max(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    c0, c1 = max(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if r0 >= r1 or c0 >= c1:
        return 0.0
    ma = a.mask[r0 - a.box[0]:r1 - a.box[0], c0 - a.box[2]:c1 - a.box[2]]
    mb = b.mask[r0 - b.box[0]:r1 - b.box[0], c0 - b.box[2]:c1 - b.box[2]]
    inter = int((ma & mb).sum())
    return inter / max(1, min(a.area, b.area))


def link_blobs(frames: list[list[Blob]], min_overlap: float = 0.5) -> list[list[Blob]]:
    """Link blobs of consecutive frames into tracks (greedy, largest overlap first).

    ``frames`` holds the blobs of consecutive frames in time order.  A blob continues the
    track of the previous frame's blob it overlaps most (at least ``min_overlap`` of the
    smaller one), each track continued by one blob.
    """
    tracks: list[list[Blob]] = []
    open_tracks: list[int] = []
    for blobs in frames:
        pairs = []
        for j, b in enumerate(blobs):
            for i in open_tracks:
                ov = _overlap(tracks[i][-1], b)
                if ov >= min_overlap:
                    pairs.append((ov, i, j))
        pairs.sort(reverse=True)
        used_t, used_b, nxt = set(), set(), []
        for _, i, j in pairs:
            if i in used_t or j in used_b:
                continue
            tracks[i].append(blobs[j])
            used_t.add(i)
            used_b.add(j)
            nxt.append(i)
        for j, b in enumerate(blobs):
            if j not in used_b:
                tracks.append([b])
                nxt.append(len(tracks) - 1)
        open_tracks = nxt
    return tracks


def _existing_proposals(t: int, labels: np.ndarray, proposal_ids: set[int]) -> list[Blob]:
    out = []
    for pid in set(np.unique(labels).tolist()) & proposal_ids:
        m = labels == pid
        box = bounding_box(m)
        out.append(Blob(t, box, m[box_slices(box)], proposal=int(pid)))
    return out


def _dismissed(track: list[Blob], dismissals: list[dict]) -> bool:
    for blob in track:
        for d in dismissals:
            if d["t"] != blob.t:
                continue
            r0, r1, c0, c1 = d["box"]
            box = Blob(blob.t, (r0, r1, c0, c1), np.ones((r1 - r0, c1 - c0), bool))
            if _overlap(blob, box) >= 0.5:
                return True
    return False


def propose_objects(session, written: list[int], params,
                    is_cancelled: Callable[[], bool] = lambda: False) -> list[int]:
    """Find, track and write proposed objects over the frames propagation just wrote.

    Frames from the first to the last written one are scanned (reference frames and frames
    not rewritten are read only: they link tracks across).  Returns the proposal ids written.
    """
    store = session.store
    if not written:
        return []
    user_refs = sorted(t for t, r in store.references.items() if r["kind"] == "user")
    user_set = set(user_refs)
    model = _model_for(session, user_refs, params)
    if model is None:
        return []
    written_set = set(written)
    objects = store.objects
    proposal_ids = {k for k, v in objects.items() if v.get("proposal")}
    dismissals = [d for v in objects.values() for d in (v.get("proposal") or {}).get("dismissed", [])]
    lo, hi = min(written), max(written)
    lo, hi = max(0, lo - 1), min(session.n_frames - 1, hi + 1)  # neighbours carry existing ids
    per_frame: list[list[Blob]] = []
    for t in range(lo, hi + 1):
        if is_cancelled():
            return []
        labels = store.read(t)
        found = _existing_proposals(t, labels, proposal_ids)
        if t in written_set or t in user_set or not found:
            found += unclaimed_blobs(t, session.image(t), labels, model)
        per_frame.append(found)
    tracks = link_blobs(per_frame, params.proposal_overlap)
    new_ids = []
    reused: set[int] = set()
    for track in tracks:
        to_write = [b for b in track if b.t in written_set and b.proposal == 0 and b.t not in user_set]
        if not to_write:
            reused.update(b.proposal for b in track if b.proposal)
            continue
        known = [b.proposal for b in track if b.proposal and b.proposal not in reused]
        if len(track) < params.proposal_min_frames or _dismissed(track, dismissals):
            continue
        pid = known[0] if known else session._new_object()
        reused.add(pid)
        for b in to_write:
            labels = store.read(b.t)
            r0, r1, c0, c1 = b.box
            win = labels[r0:r1, c0:c1]
            win[b.mask & (win == 0)] = pid
            store.write(b.t, labels)
        extend_range(store, pid, track[0].t, track[-1].t)
        new_ids.append(pid)
    # proposals that lived only in rewritten frames and were not found again are gone
    for pid in proposal_ids - reused - set(new_ids):
        info = store.attrs["objects"].get(str(pid), {}).get("proposal") or {}
        if info.get("dismissed"):
            continue
        first, last = info.get("frames", [0, -1])
        if all(t in written_set for t in range(first, last + 1)):
            store.attrs["objects"].pop(str(pid), None)
    return sorted(set(new_ids))


def extend_range(store, pid: int, first: int, last: int) -> None:
    """Record that proposal ``pid`` is written on frames ``first..last`` (at least)."""
    info = store.attrs["objects"][str(pid)].setdefault("proposal", {})
    a, b = info.get("frames", [first, last])
    info["frames"] = [int(min(a, first)), int(max(b, last))]


def _model_for(session, user_refs: list[int], params) -> ForegroundModel | None:
    """The foreground model of the session's references (cached by their revisions)."""
    mode = params.proposals
    if mode == "off" or not user_refs:
        return None
    if mode == "auto" and session.image(user_refs[0]).shape[2] != 1:
        return None
    revs = tuple(sorted((t, session.store.references[t]["revision"]) for t in user_refs))
    cache = session.__dict__.setdefault("_fg_model", {})
    if revs not in cache:
        cache.clear()
        cache[revs] = learn_foreground([session.image(t) for t in user_refs],
                                       [session.store.read(t) for t in user_refs],
                                       min_iou=params.proposal_min_fit)
    return cache[revs]
