"""MRGS: Multi-Referenced Guided Segmentation (mask propagation over the video).

The steps of Le et al. (AAAI-21), in order, as functions of this module:

1. :func:`plan_segments` -- the video is cut into spans between consecutive user references;
   only spans whose neighbouring references changed are recomputed (spans run in parallel).
2. :func:`track_object` (= :func:`warp_object` + :func:`refine_object`) -- initial mask
   tracking: each object on its own, its soft mask carried to the next frame by dense optical
   flow, then fine segmentation (a graph cut) inside a natural-shaped region of interest, a band
   following the warped outline, with a colour model of the object against its surroundings
   learnt on the references (:class:`ColourModel`, :func:`pooled_models`); small holes the
   object encloses are filled (:func:`fill_small_holes`).  Objects compete:
   a look-alike neighbour's warped core is off limits; a dividing object yields daughters
   (:func:`split_object`).
3. :func:`fuse_directions` -- bi-directional guidance: forward results from the previous
   reference and backward results from the next one, the nearest reference leading; anomaly
   correction: an object that vanished in one direction (but did not leave the frame) is taken
   from the other when its appearance agrees.
4. :func:`select_extra_samples` -- reliable propagated frames (sharp, no tiny object, both
   directions agree, no jump in area, not redundant) become automatic references, whose colours
   join the memory pool of later propagations.
5. :func:`merge_objects` -- all objects merged into one label image, overlaps resolved by
   confidence.
6. :func:`~.proposals.propose_objects` -- foreground that no object claims (cells entering,
   grey video by default) becomes proposed objects the user names or dismisses with one stroke.
"""

from __future__ import annotations

import functools
import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ._masks import bounding_box, box_slices, fill_small_holes, pieces, still_pieces
from .graphcut import cut
from .motion import FLOW_PRESETS, FlowCache, coarse_residual_motion, to_gray_u8
from .proposals import extend_range, propose_objects
from .store import LABEL_DTYPE, object_areas

__all__ = [
    "MRGSParams",
    "SoftMask",
    "ColourModel",
    "plan_segments",
    "track_object",
    "warp_object",
    "refine_object",
    "split_object",
    "fuse_directions",
    "merge_objects",
    "propagate_session",
]


_MODES = ("on", "off", "auto")


@dataclass
class MRGSParams:
    """Parameters of propagation (defaults = best measured on the benchmark)."""

    flow_preset: str = "medium"
    flow_scale: float = 0.5      # optical flow on frames resized by this factor
    pool_weight: float = 0.5     # weight of the other references' colours in an object's model
    band: int = 10               # half-width (px) of the region of interest around the warped outline
    band_motion: float = 0.3     # the band widens by this share of the object's motion ...
    band_max: float = 3.0        # ... up to this multiple of `band` (fast limbs: a breakdancer's 30-60 px)
    warp_weight: float = 2.0     # log-odds of the spatial prior at `band` px inside the warped outline
    appearance_weight: float = 1.0
    band_smooth: float = 2.0     # weight of the contrast-sensitive smoothness of the band cut (CPSM has its own `smooth`)
    hist_bins: int = 16          # colour histogram bins per channel (grey: 4x as many)
    min_area: int = 12           # an object smaller than this (px) has vanished
    max_cut_pixels: int = 20000  # larger regions of interest are cut at a lower resolution
    lost_ratio: float = 0.3      # an object below this share of its reference area has vanished
    min_score: float = 0.5       # appearance log-odds an object needs to be trusted from one side
    vanish_score: float = -1.0   # below this mean appearance log-odds a tracked object is gone
    sample_gap: int = 10         # extra samples: at least this many frames from any reference (0 = off)
    min_agreement: float = 0.85  # extra samples: forward/backward IoU of every object
    min_sample_area: int = 64    # extra samples: no object smaller than this (px)
    max_area_jump: float = 0.25  # extra samples: no object's area changes more than this vs neighbours
    bidirectional: bool = True
    workers: int = 2             # spans between references are tracked in parallel threads
    splits: str = "auto"         # an object splitting in two gets a daughter id: on, off, auto (grey video)
    split_share: float = 0.3     # each part of a split holds at least this share of the area
    core_margin: int = 3         # an object may not enter a neighbour's warped mask deeper than this (px)
    core_llr_margin: float = 1.0  # ... unless the pixel's colour fits it better by this log-odds
    proposals: str = "auto"      # unclaimed foreground becomes proposed objects: on, off, auto (grey video)
    proposal_min_frames: int = 3  # ... when seen on at least this many consecutive frames
    proposal_overlap: float = 0.5  # ... linked frame to frame by this overlap (of the smaller blob)
    proposal_min_fit: float = 0.6  # ... only when an intensity threshold reproduces the references this well (IoU)
    fuse_still: bool = True      # where the two directions disagree, pixels still against the camera while the object moves are background
    still_moving: float = 1.5    # ... the object moves: 10th percentile of its residual motion above this (px)
    still_static: float = 0.5    # ... still: residual motion below this (px)
    track_still_pieces: float = 0.8  # tracked masks: a piece this still (share of pixels) while the largest moves is dropped (0 = off)
    track_still_speed: float = 4.0  # ... the largest piece moves: median residual motion at least this (px)
    lineage_fusion: bool = True  # daughters tracked back from a later reference are not born while the parent is whole
    track_fill_holes: float = 0.05  # holes inside a tracked object smaller than this share of its area are filled (0 = off)
    reentry: str = "auto"        # an object gone through the frame's edge is looked for again: on, off, auto (colour video;
                                 # on grey video a cell coming in is another cell: a proposal)
    reentry_llr: float = 1.0     # ... where its colour log-odds pass this ...
    reentry_strip: float = 0.08  # ... in a strip along the edges this share of the frame's short side wide ...
    reentry_share: float = 0.15  # ... as a piece touching the edge of at least this share of its full size

    def __post_init__(self) -> None:
        # a misspelt choice would otherwise fail deep in a propagation thread or be silently ignored
        choices = {"flow_preset": tuple(FLOW_PRESETS), "splits": _MODES, "proposals": _MODES, "reentry": _MODES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")


# --------------------------------------------------------------------------- soft masks
@dataclass
class SoftMask:
    """Probability of one object inside a box of the frame (0 outside the box)."""

    box: tuple[int, int, int, int]   # r0, r1, c0, c1
    prob: np.ndarray                 # (r1 - r0, c1 - c0) float32
    score: float = 0.0               # appearance confidence: mean colour log-odds inside the mask
    motion: float = 0.0              # largest motion around the object when it was last warped (px)

    def __post_init__(self) -> None:
        # Python ints: a numpy int32 corner turns float32 remap coordinates into float64 (numpy 2
        # promotion), which OpenCV refuses
        self.box = tuple(int(v) for v in self.box)

    @classmethod
    def from_binary(cls, mask: np.ndarray) -> SoftMask | None:
        box = bounding_box(mask)
        if box is None:
            return None
        return cls(box, mask[box_slices(box)].astype(np.float32))

    def area(self) -> int:
        return int((self.prob > 0.5).sum())

    def tight(self, floor: float = 0.01) -> SoftMask | None:
        """The same mask in the smallest box holding its non-negligible pixels."""
        inner = bounding_box(self.prob > floor)
        if inner is None:
            return None
        a0, a1, b0, b1 = inner
        r0, _, c0, _ = self.box
        return SoftMask((r0 + a0, r0 + a1, c0 + b0, c0 + b1), self.prob[a0:a1, b0:b1], self.score)

    def pack(self) -> tuple:
        q = np.clip(self.prob * 255 + 0.5, 0, 255).astype(np.uint8)
        return self.box, q.shape, zlib.compress(q.tobytes(), 1), self.score

    @classmethod
    def unpack(cls, packed: tuple) -> SoftMask:
        box, shape, data, score = packed
        q = np.frombuffer(zlib.decompress(data), np.uint8).reshape(shape)
        return cls(box, q.astype(np.float32) / 255.0, score)


def _expand(box, margin: int, shape) -> tuple[int, int, int, int]:
    r0, r1, c0, c1 = box
    h, w = shape
    return max(0, r0 - margin), min(h, r1 + margin), max(0, c0 - margin), min(w, c1 + margin)


# --------------------------------------------------------------------------- appearance
class ColourModel:
    """Object-vs-surroundings colour log-likelihood ratio of one object.

    Foreground: the object's pixels; background: a ring around the object (its local
    surroundings, where confusion happens), so the model is local, not global.

    Parameters
    ----------
    fg, bg : (n_bins,) arrays
        Colour histograms of the object and of its surroundings (any scale).
    """

    def __init__(self, fg: np.ndarray, bg: np.ndarray):
        fg = fg / max(fg.sum(), 1e-9) + 1e-4
        bg = bg / max(bg.sum(), 1e-9) + 1e-4
        self.llr = np.clip(np.log(fg) - np.log(bg), -4.0, 4.0).astype(np.float32)

    def __call__(self, qcrop: np.ndarray) -> np.ndarray:
        return self.llr[qcrop]


def colour_histograms(qimage: np.ndarray, labels: np.ndarray, n_bins: int,
                      band: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Normalised colour histograms of every object of a frame and of the ring around it."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * band + 1, 4 * band + 1))
    out = {}
    for oid in np.unique(labels):
        if oid == 0:
            continue
        mask = labels == oid
        sm = SoftMask.from_binary(mask)
        r0, r1, c0, c1 = _expand(sm.box, 2 * band + 1, labels.shape)
        m = mask[r0:r1, c0:c1]
        ring = cv2.dilate(m.astype(np.uint8), kernel).astype(bool) & ~m
        q = qimage[r0:r1, c0:c1]
        fg = np.bincount(q[m], minlength=n_bins).astype(np.float32)
        bg = np.bincount(q[ring], minlength=n_bins).astype(np.float32)
        out[int(oid)] = (fg / max(fg.sum(), 1.0), bg / max(bg.sum(), 1.0))
    return out


def pooled_models(ref: int, hists: dict[int, dict[int, tuple]], pool_weight: float) -> dict[int, ColourModel]:
    """Colour models of the objects of reference ``ref``, completed by the other references
    (the memory pool), weighted ``pool_weight`` in total."""
    models = {}
    for oid, (fg, bg) in hists[ref].items():
        others = [h[oid] for t, h in hists.items() if t != ref and oid in h]
        if others and pool_weight > 0:
            fg = fg + pool_weight * np.mean([o[0] for o in others], axis=0)
            bg = bg + pool_weight * np.mean([o[1] for o in others], axis=0)
        models[oid] = ColourModel(fg, bg)
    return models


def quantize(image: np.ndarray, bins: int) -> np.ndarray:
    """Colour index of every pixel: (H, W, C) float in [0, 1] -> (H, W) int32 in [0, n_bins)."""
    c = image.shape[2]
    if c == 1:
        b = bins * 4
        return np.minimum((image[..., 0] * b).astype(np.int32), b - 1)
    small = np.uint8 if bins < 256 else np.int32  # (8-bit steps: ~3x faster on a 4K frame, same values)
    q = (image[..., :3] * np.float32(bins)).astype(small)
    np.minimum(q, bins - 1, out=q)
    out = q[..., 0].astype(np.int32)
    out *= bins
    out += q[..., 1]
    out *= bins
    out += q[..., 2]
    return out


def n_colour_bins(image: np.ndarray, bins: int) -> int:
    return bins * 4 if image.shape[2] == 1 else bins**3


# --------------------------------------------------------------------------- steps
def plan_segments(references: dict[int, int], n_frames: int) -> list[tuple[int | None, int | None]]:
    """Spans between consecutive references: (previous ref or None, next ref or None)."""
    refs = sorted(references)
    if not refs:
        return []
    spans: list[tuple[int | None, int | None]] = []
    if refs[0] > 0:
        spans.append((None, refs[0]))
    for a, b in zip(refs[:-1], refs[1:]):
        if b - a > 1:
            spans.append((a, b))
    if refs[-1] < n_frames - 1:
        spans.append((refs[-1], None))
    return spans


def track_object(prev: SoftMask, flow: np.ndarray, image: np.ndarray, qimage: np.ndarray,
                 model: ColourModel | None, params: MRGSParams, max_motion: float,
                 others: np.ndarray | None = None) -> SoftMask | None:
    """Carry one object's mask to the next frame and re-segment it in a band around its outline.

    Parameters
    ----------
    prev : SoftMask
        The object on the previous frame (in tracking order).
    flow : (H, W, 2) float32
        Flow from the new frame to the previous one.
    image : (H, W, C) float32
        The new frame (for the contrast-sensitive smoothness of the cut).
    qimage : (H, W) int32
        Quantised colours of the new frame (see :func:`quantize`).
    model : ColourModel or None
        Appearance of the object on the reference frames.
    others : (H, W) bool array, optional
        Cores of the other objects on the new frame (their warped masks, eroded): hard
        background for this object, so it cannot leak into a look-alike neighbour.
    max_motion : float
        Typical largest motion in the frame (99th percentile of the flow magnitude); the search
        box also covers the largest motion measured around the object itself.

    Returns
    -------
    SoftMask of the object on the new frame, or None when it vanished.

    Notes
    -----
    The region of interest follows the warped outline (pixels within ``band`` of it), not a
    rectangle; inside it a graph cut balances the colour model of the object against its local
    surroundings with a spatial prior from the warped mask and edges of the image.  Pixels
    outside the band keep the warped decision.  Holes the result encloses smaller than
    ``track_fill_holes`` of its area are filled: a car's dark windows, missed on a reference,
    are not carried as holes (DAVIS, propagating from the benchmark's own references of rounds
    1/2/4/8, three seeds: J&F 0.799 -> 0.805; a ring's hole of 25% stays open).
    """
    warped = warp_object(prev, flow, params, max_motion)
    if warped is None:
        return None
    return refine_object(warped, image, qimage, model, params, others)


def warp_object(prev: SoftMask, flow: np.ndarray, params: MRGSParams,
                max_motion: float) -> SoftMask | None:
    """Carry an object's soft mask to the next frame with the flow (None when too little is left)."""
    h, w = flow.shape[:2]
    near = _expand(prev.box, 2 * params.band, (h, w))
    fn = flow[near[0]:near[1], near[2]:near[3]]
    local = float(np.sqrt((fn * fn).sum(axis=2).max())) if fn.size else 0.0
    box = _expand(prev.box, int(np.ceil(max(local, max_motion))) + params.band + 2, (h, w))
    r0, r1, c0, c1 = box
    ys, xs = np.indices((r1 - r0, c1 - c0), np.float32)
    ys += r0
    xs += c0
    f = flow[r0:r1, c0:c1]
    pr0, _, pc0, _ = prev.box
    warped = cv2.remap(prev.prob, xs + f[..., 0] - pc0, ys + f[..., 1] - pr0, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if (warped > 0.5).sum() < params.min_area:
        return None
    return SoftMask(box, warped, prev.score, local)


def refine_object(warped_mask: SoftMask, image: np.ndarray, qimage: np.ndarray,
                  model: ColourModel | None, params: MRGSParams,
                  others: np.ndarray | None = None) -> SoftMask | None:
    """Fine segmentation of a warped object in the band around its outline (see track_object)."""
    box, warped = warped_mask.box, warped_mask.prob
    r0, r1, c0, c1 = box
    crop_img, crop_q = image[r0:r1, c0:c1], qimage[r0:r1, c0:c1]
    blocked = None if others is None else others[r0:r1, c0:c1]
    ch, cw = warped.shape
    scale = min(1.0, float(np.sqrt(params.max_cut_pixels / (ch * cw))))
    if scale < 1.0:  # large objects are re-segmented at a lower resolution, then resized back
        size = (max(4, round(cw * scale)), max(4, round(ch * scale)))
        warped_s = cv2.resize(warped, size, interpolation=cv2.INTER_AREA)
        crop_img = cv2.resize(crop_img, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        crop_q = cv2.resize(crop_q, size, interpolation=cv2.INTER_NEAREST)
        if blocked is not None:
            blocked = cv2.resize(blocked.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    else:
        warped_s = warped
    band = min(params.band + params.band_motion * warped_mask.motion, params.band_max * params.band)
    fg = _band_cut(warped_s, crop_img, crop_q, model, params, band * scale, blocked)
    if params.track_fill_holes > 0:
        fg = fill_small_holes(fg, params.track_fill_holes, blocked)
    score = float(model(crop_q[fg]).mean()) if model is not None and fg.any() else 0.0
    if score < params.vanish_score:
        return None  # what is left does not look like the object: it is gone (occluded or left)
    if scale < 1.0:
        prob = cv2.resize(fg.astype(np.float32), (cw, ch), interpolation=cv2.INTER_LINEAR)
    else:
        prob = fg.astype(np.float32)
    prob = cv2.GaussianBlur(prob, (0, 0), 0.7)
    out = SoftMask(box, prob, score).tight()
    return out if out is not None and out.area() >= params.min_area else None


def _band_cut(warped: np.ndarray, image: np.ndarray, qimage: np.ndarray, model: ColourModel | None,
              params: MRGSParams, band: float, blocked: np.ndarray | None = None) -> np.ndarray:
    """Graph cut of one object inside the band of half-width ``band`` around its warped outline."""
    inside = warped > 0.5
    d_in = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 3)
    signed = np.where(inside, d_in, -d_out)  # > 0 inside the warped object
    band = max(float(band), 2.0)
    # spatial prior (log-odds): grows with the distance from the warped outline
    logit = params.warp_weight * np.clip(signed / band, -1.5, 1.5)
    if model is not None:
        logit = logit + params.appearance_weight * model(qimage)
    hard_bg = signed <= -band
    if blocked is not None:
        hard_bg |= blocked
    hard_fg = (signed >= band) & ~hard_bg
    u_fg = np.logaddexp(0, -logit).astype(np.float32)   # -log sigmoid(logit)
    u_bg = np.logaddexp(0, logit).astype(np.float32)
    u_fg[hard_bg] = 1e6
    u_bg[hard_fg] = 1e6
    return cut(u_fg, u_bg, image, params.band_smooth, ~(hard_fg | hard_bg))


def find_reentry(image: np.ndarray, qimage: np.ndarray, model: ColourModel, claimed: np.ndarray,
                 ref_area: float, params: MRGSParams) -> SoftMask | None:
    """An object that left through the frame's edge, coming back.

    The largest piece of pixels that look like the object (its colour log-odds at least
    ``reentry_llr``), in a strip along the frame's edges (``reentry_strip`` of the frame's short
    side deep, or half the object's size if more), touching the edge, claimed by no
    other object and at least ``reentry_share`` of the object's area ``ref_area`` (its full size:
    the larger of its reference's and the confirmed masks' median); then
    re-segmented as a tracked object is (None when nothing qualifies or it does not look like
    the object once segmented).
    """
    h, w = qimage.shape
    # deep enough for the share of the object looked for: ~0.6 sqrt(area) is half a round object
    s = max(4, int(round(max(params.reentry_strip * min(h, w), 0.6 * np.sqrt(ref_area)))))
    inner = np.zeros((h, w), bool)
    inner[s:h - s, s:w - s] = True
    cand = (model(qimage) >= params.reentry_llr) & ~inner & ~claimed
    cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    need = max(params.min_area, params.reentry_share * ref_area)
    best, best_area = 0, 0
    for k in range(1, n):
        x, y, bw, bh, area = stats[k]
        at_edge = x == 0 or y == 0 or x + bw == w or y + bh == h
        if at_edge and area >= need and area > best_area:
            best, best_area = k, area
    if not best:
        return None
    x, y, bw, bh, _ = stats[best]
    r0, r1, c0, c1 = _expand((y, y + bh, x, x + bw), int(params.band) + 1, (h, w))
    seed = SoftMask((r0, r1, c0, c1), (lab[r0:r1, c0:c1] == best).astype(np.float32))
    return refine_object(seed, image, qimage, model, params, claimed)


def split_object(mask: SoftMask, min_share: float) -> list[SoftMask]:
    """The parts of an object that split (e.g. a dividing cell), largest first.

    An object splits when its mask has two or more separate parts each holding at least
    ``min_share`` of its area; otherwise it is returned whole (small debris stays with it).
    """
    fg = (mask.prob > 0.5).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 2:
        return [mask]
    areas = stats[1:, cv2.CC_STAT_AREA]
    big = [i + 1 for i in np.argsort(-areas) if areas[i] >= min_share * areas.sum()]
    if len(big) < 2:
        return [mask]
    # every pixel of the object (debris included) goes to the nearest big part
    dists = np.stack([cv2.distanceTransform((lab != comp).astype(np.uint8), cv2.DIST_L2, 3)
                      for comp in big])
    nearest = np.argmin(dists, axis=0)
    parts = []
    for k in range(len(big)):
        keep = nearest == k
        part = SoftMask(mask.box, np.where(keep, mask.prob, 0).astype(np.float32), mask.score).tight()
        if part is not None:
            parts.append(part)
    return parts or [mask]


def fuse_directions(fwd: SoftMask | None, bwd: SoftMask | None, w_fwd: float,
                    in_refs: tuple[bool, bool] = (True, True), ref_areas: tuple[int, int] = (0, 0),
                    lost_ratio: float = 0.3, min_score: float = 0.5,
                    exited: tuple[bool, bool] = (False, False)) -> SoftMask | None:
    """Fuse forward and backward estimates of one object, repairing anomalies.

    Parameters
    ----------
    fwd, bwd : SoftMask or None
        The object tracked from the previous / next reference (None: lost or absent).
    w_fwd : float
        Weight of the forward estimate by temporal distance (1 next to the previous reference,
        0 next to the next one): the nearest reference leads.
    in_refs : (bool, bool)
        Whether the previous / next reference frame shows the object.
    ref_areas : (int, int)
        The object's area on the previous / next reference.
    lost_ratio : float
        An estimate smaller than this share of its reference's area has vanished.
    min_score : float
        Appearance confidence an estimate needs to be trusted alone.
    exited : (bool, bool)
        Whether the forward / backward estimate is absent because the object left through the
        frame's edge (then it is gone, not lost).

    Notes
    -----
    Anomaly correction: when one direction lost an object its reference showed (it vanished or
    collapsed, e.g. after fast motion or an occlusion) while the other direction still sees it
    with the object's appearance, the other direction is taken whole.  An object that one
    reference does not show (it enters or leaves in between, or the user removed it there) is
    blended by temporal distance, so a correction that removes an object changes the frames
    nearer to it and an object that really leaves stays gone.
    """
    if fwd is None and bwd is None:
        return None
    lost_f = in_refs[0] and not exited[0] and (fwd is None or fwd.area() < lost_ratio * ref_areas[0])
    lost_b = in_refs[1] and not exited[1] and (bwd is None or bwd.area() < lost_ratio * ref_areas[1])
    if lost_f and not lost_b and bwd is not None and bwd.score >= min_score:
        return bwd
    if lost_b and not lost_f and fwd is not None and fwd.score >= min_score:
        return fwd
    box = _union_box(fwd, bwd)
    r0, r1, c0, c1 = box
    acc = np.zeros((r1 - r0, c1 - c0), np.float32)
    for m, wgt in ((fwd, w_fwd), (bwd, 1.0 - w_fwd)):
        if m is not None and wgt > 0:
            a0, a1, b0, b1 = m.box
            acc[a0 - r0:a1 - r0, b0 - c0:b1 - c0] += wgt * m.prob
    score = sum(wgt * m.score for m, wgt in ((fwd, w_fwd), (bwd, 1.0 - w_fwd)) if m is not None)
    return SoftMask(box, acc, score)


def _union_box(*masks: SoftMask | None) -> tuple[int, int, int, int]:
    """The box holding the boxes of the given masks (None ones skipped)."""
    boxes = [m.box for m in masks if m is not None]
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


def _in_box(m: SoftMask, box: tuple[int, int, int, int]) -> np.ndarray:
    """``m``'s probability pasted into ``box`` (which contains ``m.box``)."""
    out = np.zeros((box[1] - box[0], box[3] - box[2]), np.float32)
    a0, a1, b0, b1 = m.box
    out[a0 - box[0]:a1 - box[0], b0 - box[2]:b1 - box[2]] = m.prob
    return out


def _residual_in_box(residual: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Magnitude of a coarse residual motion field resampled on the pixels of ``box``."""
    r0, r1, c0, c1 = box
    hs, ws = residual.shape[:2]
    sy, sx = hs / shape[0], ws / shape[1]
    size = (r1 - r0, c1 - c0)
    mx = np.broadcast_to(((np.arange(c0, c1, dtype=np.float32) + 0.5) * sx - 0.5)[None, :], size)
    my = np.broadcast_to(((np.arange(r0, r1, dtype=np.float32) + 0.5) * sy - 0.5)[:, None], size)
    res = cv2.remap(residual, np.ascontiguousarray(mx), np.ascontiguousarray(my), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return np.sqrt((res * res).sum(axis=2))


def drop_still_disagreement(m: SoftMask, fwd: SoftMask, bwd: SoftMask, residual: np.ndarray,
                            shape: tuple[int, int], params: MRGSParams) -> SoftMask | None:
    """Remove from the fused mask ``m`` the pixels only one direction claims that stay still
    against the camera while the object moves.

    A leak onto look-alike ground grows in one direction of tracking and is carried along; where
    the fusion hands over from one direction to the other it would appear in the middle of the
    span.  Ground does not move with the animal; pixels both directions agree on (a planted paw)
    are left alone.  ``residual``: :func:`~napari_ivoma.engine.motion.coarse_residual_motion` of
    the frame's flow.
    """
    box = _union_box(m, fwd, bwd)  # m may be one direction taken whole (anomaly repair)
    fp, bp = _in_box(fwd, box) > 0.5, _in_box(bwd, box) > 0.5
    both = fp & bp
    if both.sum() < 20:
        return m
    mag = _residual_in_box(residual, box, shape)
    if np.percentile(mag[both], 10) <= params.still_moving:
        return m  # the object does not clearly move against the camera
    drop = (fp != bp) & (mag < params.still_static)
    if not drop.any():
        return m
    prob = _in_box(m, box)
    prob[drop] = 0.0
    return SoftMask(box, prob, m.score).tight()


def drop_still_pieces(m: SoftMask, residual: np.ndarray | Callable[[], np.ndarray], shape: tuple[int, int],
                      params: MRGSParams) -> SoftMask | None:
    """Remove from ``m`` its pieces (8-connected components of the mask) of which at least
    ``track_still_pieces`` of the pixels stay still against the camera (below ``still_static``
    px) while its largest piece moves (median above ``track_still_speed`` px): patches of wall a
    dancer's track picked up and carries along.  Specks under 0.5% of the mask are left.
    ``residual``: the frame's :func:`~napari_ivoma.engine.motion.coarse_residual_motion`, or a
    function returning it (called only when ``m`` is in pieces)."""
    fg = m.prob > 0.5
    lab, sizes, largest = pieces(fg)
    if len(sizes) < 3:  # (one piece or none)
        return m
    mag = _residual_in_box(residual() if callable(residual) else residual, m.box, shape)
    if float(np.median(mag[lab == largest])) < params.track_still_speed:
        return m
    drop = still_pieces(lab, sizes, mag < params.still_static, params.track_still_pieces, 0.005 * fg.sum())
    drop[largest] = False
    if not drop.any():
        return m
    prob = m.prob.copy()
    prob[drop[lab]] = 0.0
    return SoftMask(m.box, prob, m.score).tight()


def merge_objects(masks: dict[int, SoftMask], shape: tuple[int, int]) -> np.ndarray:
    """One label image from per-object probabilities: each pixel goes to its most confident object
    (if above 0.5)."""
    best = np.full(shape, 0.5, np.float32)
    labels = np.zeros(shape, LABEL_DTYPE)
    for oid, m in masks.items():
        r0, r1, c0, c1 = m.box
        b = best[r0:r1, c0:c1]
        win = m.prob > b
        b[win] = m.prob[win]
        labels[r0:r1, c0:c1][win] = oid
    return labels


# --------------------------------------------------------------------------- driver
class _Pass:
    """One direction of tracking from a reference frame through a span."""

    def __init__(self, session, ref: int, step: int, flows: FlowCache, params: MRGSParams,
                 models: dict[int, ColourModel]):
        self.session, self.step, self.flows, self.params = session, step, flows, params
        labels = session.store.read(ref)
        self.state: dict[int, SoftMask] = {}
        for oid in np.unique(labels):
            if oid:
                self.state[int(oid)] = SoftMask.from_binary(labels == oid)
        self.ref_areas = {oid: sm.area() for oid, sm in self.state.items()}
        self._full_areas: dict[int, float] = {}  # (see _full_area)
        self.exited: dict[int, bool] = {}  # objects gone so far: True if through the frame edge
        mode = params.splits
        grey = session.image(ref).shape[2] == 1
        self.detect_splits = step > 0 and (mode == "on" or (mode == "auto" and grey))
        self.models = dict(models)
        self.custom = getattr(session.backend, "refine_mask", None)  # a backend's own refinement
        # (the search uses the engine's colour models: a backend's refine_mask goes without it)
        self.find_returns = self.custom is None and (params.reentry == "on" or (params.reentry == "auto" and not grey))
        self.t = ref

    def _blocked(self, cores, box, oid, q):
        return _blocked_pixels(cores, box, oid, q, self.models, self.params.core_llr_margin)

    def _full_area(self, oid: int) -> float:
        """The size a returning object is looked for at: its reference may show it only in part
        (coming in), so the confirmed masks' median area counts too (asked only when searching:
        the memory pool may still be computing a frame just confirmed)."""
        if oid not in self._full_areas:
            remembered = getattr(self.session.memory, "object_area", None)
            known = remembered(oid) if remembered is not None else None
            self._full_areas[oid] = max(float(self.ref_areas[oid]), known or 0.0)
        return self._full_areas[oid]

    def _look_for_returns(self, state: dict[int, SoftMask], image: np.ndarray, q: np.ndarray) -> None:
        """Objects gone through the frame's edge that come back are tracked again (``state`` grows)."""
        gone = [oid for oid, edge in self.exited.items()
                if edge and oid not in state and oid in self.models and oid in self.ref_areas]
        if not gone:
            return
        claimed = np.zeros(q.shape, bool)
        for sm in state.values():
            claimed[box_slices(sm.box)] |= sm.prob > 0.5
        for oid in gone:
            back = find_reentry(image, q, self.models[oid], claimed, self._full_area(oid), self.params)
            if back is not None:
                state[oid] = back
                del self.exited[oid]
                claimed[box_slices(back.box)] |= back.prob > 0.5

    def advance(self) -> dict[int, SoftMask]:
        t_new = self.t + self.step
        search = self.find_returns and any(self.exited.values())
        if self.state or search:
            image = self.session.image(t_new)
            q = quantize(image, self.params.hist_bins) if self.custom is None else None
            new_state = self._track(t_new, image, q) if self.state else {}
            if search:  # (also with no object left to track: they may all come back)
                self._look_for_returns(new_state, image, q)
            self.state = new_state
        self.t = t_new
        return self.state

    def _track(self, t_new: int, image: np.ndarray, q: np.ndarray | None) -> dict[int, SoftMask]:
        """The tracked objects on frame ``t_new``: warped by the flow, then refined."""
        flow = self.flows.flow(t_new, self.t)
        mag = np.sqrt((flow[::4, ::4] ** 2).sum(axis=2))
        max_motion = float(np.percentile(mag, 99))
        new_state = {}
        h, w = flow.shape[:2]
        margin = max_motion + self.params.band
        warped = {oid: warp_object(sm, flow, self.params, max_motion) for oid, sm in self.state.items()}
        if self.custom is None:  # the engine's own refinement: colours and neighbours' cores
            cores = _cores(warped, (h, w), self.params.core_margin)
        for oid, sm in self.state.items():
            nxt = None
            if warped[oid] is not None and self.custom is not None:
                nxt = _custom_refine(self.custom, t_new, image, warped[oid], oid, self.params)
            elif warped[oid] is not None:
                others = self._blocked(cores, warped[oid].box, oid, q)
                nxt = refine_object(warped[oid], image, q, self.models.get(oid), self.params, others)
            if nxt is not None and self.detect_splits:
                parts = split_object(nxt, self.params.split_share)
                nxt = parts[0]
                for part in parts[1:]:  # a division: the other part is a new, related object
                    if _claimed_by_others(part, warped, oid):
                        continue  # a piece that grew onto a neighbour, not a daughter
                    child = self.session._new_object(parent=oid)
                    new_state[child] = part
                    self.models[child] = self.models.get(oid)
            if nxt is not None:
                new_state[oid] = nxt
            else:  # remember whether it left through the frame's edge or was lost inside
                r0, r1, c0, c1 = sm.box
                self.exited[oid] = min(r0, c0, h - r1, w - c1) <= margin
        return new_state


def _custom_refine(refine: Callable, t: int, image: np.ndarray, warped: SoftMask, oid: int,
                   params: MRGSParams) -> SoftMask | None:
    """A backend's ``refine_mask(t, image, box, warped_prob, object_id)`` in place of the band
    graph cut: the object's probability in the same box, or None when it is gone."""
    prob = refine(t, image, warped.box, warped.prob, oid)
    if prob is None:
        return None
    prob = np.asarray(prob, np.float32)
    if prob.shape != warped.prob.shape:
        raise ValueError(f"backend refine_mask returned shape {prob.shape} for a box of shape "
                         f"{warped.prob.shape} (object {oid}, frame {t})")
    inside = prob[prob > 0.5]
    if inside.size < params.min_area:
        return None
    m = float(np.clip(inside.mean(), 0.5, 0.99))
    return SoftMask(warped.box, prob, float(np.log(m / (1.0 - m)))).tight()


def _claimed_by_others(part: SoftMask, warped: dict[int, SoftMask | None], oid: int) -> bool:
    """Whether most of ``part`` lies inside other objects' warped masks."""
    r0, r1, c0, c1 = part.box
    mine = part.prob > 0.5
    claimed = np.zeros_like(mine)
    for other, m in warped.items():
        if other == oid or m is None:
            continue
        a0, a1, b0, b1 = max(r0, m.box[0]), min(r1, m.box[1]), max(c0, m.box[2]), min(c1, m.box[3])
        if a0 < a1 and b0 < b1:
            claimed[a0 - r0:a1 - r0, b0 - c0:b1 - c0] |= m.prob[a0 - m.box[0]:a1 - m.box[0],
                                                                 b0 - m.box[2]:b1 - m.box[2]] > 0.5
    return np.count_nonzero(mine & claimed) > 0.5 * max(np.count_nonzero(mine), 1)


def _blocked_pixels(cores: np.ndarray | None, box: tuple[int, int, int, int], oid: int,
                    qimage: np.ndarray, models: dict[int, ColourModel | None],
                    margin: float) -> np.ndarray | None:
    """Full-frame map of the pixels object ``oid`` may not take inside ``box``: other objects'
    cores, unless the pixel looks clearly more like ``oid`` than like its owner (an occluder
    moving in front of the owner may take it; a look-alike neighbour may not)."""
    if cores is None:
        return None
    r0, r1, c0, c1 = box
    own = cores[r0:r1, c0:c1]
    theirs = (own != 0) & (own != oid)
    if not theirs.any():
        return None
    q = qimage[r0:r1, c0:c1]
    mine = models.get(oid)
    blocked = theirs.copy()
    if mine is not None:
        llr_mine = mine(q)
        for other in np.unique(own[theirs]):
            model = models.get(int(other))
            if model is None:
                continue
            sel = own == other
            blocked[sel] = llr_mine[sel] <= model(q[sel]) + margin
    out = np.zeros(cores.shape, bool)
    out[r0:r1, c0:c1] = blocked
    return out


def _cores(warped: dict[int, SoftMask | None], shape: tuple[int, int], margin: int) -> np.ndarray | None:
    """Owner of every pixel deep inside one object's warped mask (0: nobody or contested).

    With fewer than two objects there is nothing to keep apart (None).
    """
    present = {oid: m for oid, m in warped.items() if m is not None}
    if len(present) < 2:
        return None
    owner = np.zeros(shape, np.int64)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    for oid, m in present.items():
        core = cv2.erode((m.prob > 0.5).astype(np.uint8), kernel) > 0
        r0, r1, c0, c1 = m.box
        win = owner[r0:r1, c0:c1]
        win[core & (win != 0)] = -1  # two objects claim it: nobody's core
        win[core & (win == 0)] = oid
    owner[owner < 0] = 0
    return owner


def _reference_histograms(session, refs: dict[int, int], params: MRGSParams) -> dict[int, dict]:
    """Colour histograms of the objects of every reference (cached by reference revision)."""
    cache = session.__dict__.setdefault("_ref_hists", {})
    out = {}
    for t, rev in refs.items():
        key = (t, rev, params.hist_bins, params.band)
        if key not in cache:
            image = session.image(t)
            cache[key] = colour_histograms(quantize(image, params.hist_bins), session.store.read(t),
                                           n_colour_bins(image, params.hist_bins), params.band)
        out[t] = cache[key]
    return out


def propagate_session(session, start: int, stop: int, progress: Callable[[int, int], None] | None,
                      is_cancelled: Callable[[], bool]) -> int:
    """Propagate every stale span of ``session`` inside ``[start, stop)``; returns frames written."""
    params: MRGSParams = getattr(session.backend, "mrgs_params", None) or MRGSParams()
    store = session.store
    refs = {t: r["revision"] for t, r in store.references.items() if r["kind"] == "user"}
    computed = np.asarray(store.computed_from[:])
    flows = session._flow_cache()
    jobs = []
    for a, b in plan_segments(refs, session.n_frames):
        key = np.array([-1 if a is None else a, -1 if a is None else refs[a],
                        -1 if b is None else b, -1 if b is None else refs[b]], np.int64)
        lo = 0 if a is None else a + 1
        hi = session.n_frames if b is None else b
        todo = [t for t in range(max(lo, start), min(hi, stop)) if not np.array_equal(computed[t], key)]
        if todo:
            jobs.append((a, b, key, todo))
    total = 0
    for a, b, _, todo in jobs:
        passes = (a is not None) + (b is not None and (params.bidirectional or a is None))
        total += passes * len(todo)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for a, b, _, _ in jobs:
        _clear_auto_references(store, a, b)
    pool = {t: r["revision"] for t, r in store.references.items()}  # user + automatic
    hists = _reference_histograms(session, pool, params)
    lock = threading.Lock()

    written: list[int] = []

    def run(job) -> int:
        a, b, key, todo = job
        records, n = [], 0
        for t, labels, agree in _track_span(session, a, b, todo, flows, params, hists, is_cancelled,
                                            locked_tick):
            # the frame is still in the session's image cache: measure its sharpness now
            areas = object_areas(labels)
            records.append((t, areas, agree, sharpness(session.image(t))))
            with lock:
                store.write(t, labels)
                for oid in areas:  # proposed objects (daughters)
                    if "proposal" in store.attrs["objects"].get(str(oid), {}):
                        extend_range(store, int(oid), t, t)
                store.computed_from[t] = key
                written.append(t)
                tick()
            n += 1
        if not is_cancelled():
            samples = select_extra_samples(records, session, params)
            with lock:
                for t in samples:
                    store.set_reference(t, "auto")
        return n

    def locked_tick() -> None:
        with lock:
            tick()

    workers = max(1, min(params.workers, len(jobs), os.cpu_count() or 1))
    if workers == 1:
        n = sum(run(job) for job in jobs if not is_cancelled())
    else:
        with ThreadPoolExecutor(workers) as pool_exec:
            n = sum(pool_exec.map(run, jobs))
    if not is_cancelled():
        propose_objects(session, sorted(written), params, is_cancelled)
    return n


def _track_span(session, a: int | None, b: int | None, todo: list[int], flows: FlowCache,
                params: MRGSParams, hists: dict, is_cancelled: Callable[[], bool],
                tick: Callable[[], None]):
    """Track every object through the span between references ``a`` and ``b`` (either may be
    None), yielding ``(t, labels, agreement)`` for the frames in ``todo`` in the order they are
    finished; ``agreement`` is the lowest forward/backward IoU of an object (1 with one
    direction).  ``tick`` is called for each frame of a first pass whose result waits for the
    second one."""
    shape = (session.height, session.width)
    first, last = todo[0], todo[-1]
    fwd_results: dict[int, dict] = {}
    fwd_areas: dict[int, int] = {}
    use_bwd = b is not None and (params.bidirectional or a is None)
    if a is not None:
        tracker = _Pass(session, a, +1, flows, params, pooled_models(a, hists, params.pool_weight))
        fwd_areas = tracker.ref_areas
        fwd_exited: dict[int, dict[int, bool]] = {}
        for t in range(a + 1, last + 1):
            if is_cancelled():
                return
            state = tracker.advance()
            if t < first:
                continue
            if use_bwd:
                fwd_results[t] = {oid: sm.pack() for oid, sm in state.items()}
                fwd_exited[t] = dict(tracker.exited)
                tick()
            else:
                yield t, merge_objects(_without_still_pieces(state, flows, t, t - 1, shape, params), shape), 1.0
    if not use_bwd:
        return
    tracker = _Pass(session, b, -1, flows, params, pooled_models(b, hists, params.pool_weight))
    for t in range(b - 1, first - 1, -1):
        if is_cancelled():
            return
        state = tracker.advance()
        if t > last:
            continue
        if a is None:
            yield t, merge_objects(_without_still_pieces(state, flows, t, t + 1, shape, params), shape), 1.0
            continue
        fwd = {oid: SoftMask.unpack(p) for oid, p in fwd_results.pop(t).items()}
        ex_f = fwd_exited.pop(t)
        w_fwd = (b - t) / (b - a)
        fused, agree = {}, 1.0
        frame_motion = _lazy_frame_motion(flows, t, t + 1)  # (its flow to t + 1 is cached)
        bwd = dict(state)  # (the tracker's own state goes on unchanged)
        unborn, parents = _unborn_daughters(session, fwd, bwd, set(fwd_areas), set(tracker.ref_areas)) \
            if params.lineage_fusion else (set(), set())
        for k in unborn:
            del bwd[k]
        for oid in set(fwd) | set(bwd):
            f, g = fwd.get(oid), bwd.get(oid)
            iou_fg = _soft_iou(f, g)
            agree = min(agree, iou_fg)  # (0 for a parent: a frame next to a division is no extra sample)
            if oid in parents:  # the cell before its division: as the forward pass sees it
                fused[oid] = f
                continue
            m = fuse_directions(f, g, w_fwd, in_refs=(oid in fwd_areas, oid in tracker.ref_areas),
                                ref_areas=(fwd_areas.get(oid, 0), tracker.ref_areas.get(oid, 0)),
                                lost_ratio=params.lost_ratio, min_score=params.min_score,
                                exited=(ex_f.get(oid, False), tracker.exited.get(oid, False)))
            if m is not None and f is not None and g is not None and params.fuse_still and iou_fg < 0.98:
                m = drop_still_disagreement(m, f, g, frame_motion(), shape, params)
            if m is not None and params.track_still_pieces > 0:
                m = drop_still_pieces(m, frame_motion, shape, params)
            if m is not None:
                fused[oid] = m
        yield t, merge_objects(fused, shape), agree


def _lazy_frame_motion(flows: FlowCache, t: int, src: int) -> Callable[[], np.ndarray]:
    """Frame ``t``'s own motion (:func:`~napari_ivoma.engine.motion.coarse_residual_motion` of its
    flow from ``src``), computed on the first call and kept."""
    return functools.cache(lambda: coarse_residual_motion(flows.flow(t, src)))


def _without_still_pieces(state: dict[int, SoftMask], flows: FlowCache, t: int, src: int,
                          shape: tuple[int, int], params: MRGSParams) -> dict[int, SoftMask]:
    """A one-direction track's masks on frame ``t`` without their still pieces (see
    :func:`drop_still_pieces`), for the output only: the tracker's own state goes on unchanged.
    ``src``: the frame the tracker came from (the flow into ``t`` it has cached)."""
    if params.track_still_pieces <= 0:
        return state
    frame_motion = _lazy_frame_motion(flows, t, src)  # (only a mask in pieces asks: most frames pay nothing)
    out = {}
    for oid, m in state.items():
        m = drop_still_pieces(m, frame_motion, shape, params)
        if m is not None:
            out[oid] = m
    return out


def _unborn_daughters(session, fwd: dict[int, SoftMask], bwd: dict[int, SoftMask], on_a: set[int],
                      on_b: set[int]) -> tuple[set[int], set[int]]:
    """Objects tracked backward from reference b that are not born yet on this frame, and
    the parents that stand for them.

    A cell that divides between two references is one object on the earlier reference and its
    daughters on the later one.  Tracked backward, the daughters converge onto the parent; by
    temporal distance alone they would take it over half-way back.  A daughter (an object
    absent on reference a) lying mostly inside an object that is on reference a but not on b
    (the parent) is not born yet while the forward pass still sees that parent whole, i.e. has
    not split a child off it -- provided it is a division: two such daughters, or the session
    records the parent as its parent.  (One object renamed on reference b is not a division:
    the usual fusion by temporal distance applies.)
    """
    newborn = [k for k in bwd if k not in on_a]
    leaving = [p for p in fwd if p in on_a and p not in on_b]
    if not newborn or not leaving:
        return set(), set()
    objects = session.objects
    split_seen = {objects.get(c, {}).get("parent") for c in fwd if c not in on_a}
    unborn: set[int] = set()
    parents: set[int] = set()
    for p in leaving:
        if p in split_seen:
            continue
        inside = []
        for k in newborn:
            box = _union_box(fwd[p], bwd[k])
            mk = _in_box(bwd[k], box) > 0.5
            n = np.count_nonzero(mk)
            if n and np.count_nonzero(mk & (_in_box(fwd[p], box) > 0.5)) > 0.5 * n:
                inside.append(k)
        if len(inside) >= 2 or any(objects.get(k, {}).get("parent") == p for k in inside):
            unborn.update(inside)
            parents.add(p)
    return unborn, parents


def _soft_iou(a: SoftMask | None, b: SoftMask | None) -> float:
    """IoU of two objects' masks (1 when both are absent, 0 when one is)."""
    if a is None or b is None:
        return float(a is None and b is None)
    box = _union_box(a, b)
    ma, mb = _in_box(a, box) > 0.5, _in_box(b, box) > 0.5
    union = np.count_nonzero(ma | mb)
    return 1.0 if union == 0 else np.count_nonzero(ma & mb) / union


def _clear_auto_references(store, a: int | None, b: int | None) -> None:
    lo = -1 if a is None else a
    hi = np.inf if b is None else b
    for t, r in list(store.references.items()):
        if r["kind"] == "auto" and lo < t < hi:
            store.remove_reference(t)


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of a frame (low = blurry)."""
    return float(cv2.Laplacian(to_gray_u8(image), cv2.CV_32F).var())


def select_extra_samples(records: list[tuple[int, dict[int, int], float, float]], session,
                         params: MRGSParams) -> list[int]:
    """Reliable propagated frames to promote to automatic references.

    A frame qualifies when it is not blurry (Laplacian variance at least half the span's median),
    every object on it is not tiny (``min_sample_area``), nothing anomalous happens to it (the
    forward and backward estimates agree, ``min_agreement``, and no object's area jumps by more
    than ``max_area_jump`` from the neighbouring frames), and it is not redundant (at least
    ``sample_gap`` frames from every reference).  Best-agreeing frames are taken first.
    ``records``: (frame, {object id: area}, agreement, sharpness) per propagated frame.
    """
    if params.sample_gap <= 0 or len(records) < 3:
        return []
    records = sorted(records, key=lambda r: r[0])
    areas = [r[1] for r in records]
    sharp = np.array([r[3] for r in records])
    floor = 0.5 * float(np.median(sharp))
    taken = sorted(session.store.references)
    chosen = []
    order = sorted(range(len(records)), key=lambda i: -records[i][2])
    for i in order:
        t, _, agree, _ = records[i]
        if agree < params.min_agreement or sharp[i] < floor or not 0 < i < len(records) - 1:
            continue
        if not areas[i] or min(areas[i].values()) < params.min_sample_area:
            continue
        jumps = [_area_jump(areas[i], areas[j]) for j in (i - 1, i + 1)]
        if max(jumps) > params.max_area_jump:
            continue
        if any(abs(t - r) < params.sample_gap for r in taken + chosen):
            continue
        chosen.append(t)
    return sorted(chosen)


def _area_jump(a: dict[int, int], b: dict[int, int]) -> float:
    """The largest relative change of an object's area between two frames ({id: area})."""
    return max((abs(a.get(k, 0) - b.get(k, 0)) / max(a.get(k, 0), b.get(k, 0), 1) for k in a.keys() | b.keys()),
               default=0.0)
