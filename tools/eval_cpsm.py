"""Dev evaluation of CPSM with simulated users (reads ../shared/data, never copies it).

Strokes come from the benchmark's simulated annotator (:mod:`napari_ivoma.bench.annotator`).
DAVIS: round 1 = one stroke along the skeleton longest path of the GT object, no
background stroke; round 2 = prior + a stroke along the largest false-negative region
(object id) and one along the largest false-positive region (id 0), same frame.
Cells: one skeleton stroke (or, "click", the innermost pixel) per GT nucleus, per-object J.

Usage::

    python tools/eval_cpsm.py [davis] [cells] [--frames 0,mid] [--param name=value ...]
    python tools/eval_cpsm.py memory [--seeds 3] [--param memory_scale=0]   # self-reference refinement
    python tools/eval_cpsm.py bgstroke --seeds 4 [--param bg_stroke_reach=1]  # first round with a background stroke
    python tools/eval_cpsm.py pairs --seeds 3 [--alone]  # two objects in one frame (together / each alone)
    python tools/eval_cpsm.py natural --seeds 2 [--param appearance_split=0]  # touching objects, generated
    python tools/eval_cpsm.py touching --seeds 2  # a DAVIS object pasted against another's, touching
    python tools/eval_cpsm.py strokes  # nuclei from a short dash, a click or a skeleton stroke each
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # stable timings on a shared, loaded CPU

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from napari_ivoma.bench.annotator import correction_scribbles, first_round_scribbles, largest_region
from napari_ivoma.engine.cpsm import CPSMParams, scribbles_to_mask
from napari_ivoma.engine.scribbles import Scribble

DATA = os.environ.get("IVOMA_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
DAVIS_SEQS = ["bear", "blackswan", "breakdance-flare", "car-shadow", "dog"]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def center_point(mask: np.ndarray) -> np.ndarray:
    dt = ndi.distance_transform_edt(mask)
    return np.array(np.unravel_index(int(np.argmax(dt)), mask.shape), float)[None]


def load_davis(seq: str, t: int):
    fr = sorted(glob.glob(f"{DATA}/davis/{seq}/frames/*.jpg"))
    ms = sorted(glob.glob(f"{DATA}/davis/{seq}/masks/*.png"))
    img = np.asarray(Image.open(fr[t]).convert("RGB"), np.float32) / 255.0
    gt = np.asarray(Image.open(ms[t]).convert("L")) > 127
    return img, gt, len(fr)


def davis_motion(seq: str, t: int, n: int) -> np.ndarray:
    """Motion features of DAVIS frame t from its flows to the neighbouring frames (as the Session)."""
    from napari_ivoma.engine.motion import FlowCache, motion_features, to_gray_u8

    nbrs = [u for u in (t - 1, t + 1) if 0 <= u < n]
    frames = {u: load_davis(seq, u)[0] for u in [t, *nbrs]}  # (each read once)
    cache = FlowCache(lambda u: to_gray_u8(frames[u]), "medium", scale=0.5)
    return motion_features([cache.flow(t, u) for u in nbrs], frames[t], [frames[u] for u in nbrs])


def eval_davis(params: CPSMParams, frames: list[str], verbose: bool = True, motion: bool = False):
    r1, r2, times = [], [], []
    for seq in DAVIS_SEQS:
        n = len(glob.glob(f"{DATA}/davis/{seq}/frames/*.jpg"))
        for f in frames:
            t = 0 if f == "0" else (n // 2 if f == "mid" else int(f))
            img, gt, _ = load_davis(seq, t)
            scr = first_round_scribbles(gt.astype(np.uint32), [1])
            mot = davis_motion(seq, t, n) if motion else None
            t0 = time.perf_counter()
            pred = scribbles_to_mask(img, scr, params=params, motion=mot) == 1
            times.append(time.perf_counter() - t0)
            j1 = jaccard(pred, gt)
            new = correction_scribbles(gt.astype(np.uint32), pred.astype(np.uint32), [1])
            prior = pred.astype(np.uint32)
            t0 = time.perf_counter()
            pred2 = (
                scribbles_to_mask(img, scr + new, prior=prior, new_ids={s.object_id for s in new}, params=params,
                                  motion=mot)
                == 1
            )
            times.append(time.perf_counter() - t0)
            j2 = jaccard(pred2, gt)
            r1.append(j1)
            r2.append(j2)
            # what the correction did to the regions its strokes were drawn on (the annotator's
            # largest false-negative / false-positive regions) and elsewhere
            fn, fp = largest_region(gt & ~pred), largest_region(~gt & pred)
            fixed_fn = float(pred2[fn].mean()) if fn.any() else 1.0
            fixed_fp = float(1.0 - pred2[fp].mean()) if fp.any() else 1.0
            lost = int((pred & gt & ~pred2 & ~fp).sum())
            if verbose:
                print(f"  {seq:18s} t={t:3d}  J1={j1:.3f}  J2={j2:.3f}  ({len(new)} corr strokes: FN region "
                      f"{int(fn.sum())} px {fixed_fn:.0%} recovered, FP region {int(fp.sum())} px {fixed_fp:.0%} "
                      f"removed, {lost} right px lost)  {times[-2]:.2f}s/{times[-1]:.2f}s")
    print(f"DAVIS round1 mean J={np.mean(r1):.3f}  round2 mean J={np.mean(r2):.3f}  worse={sum(b < a - 1e-3 for a, b in zip(r1, r2))}  "
          f"median time={np.median(times):.2f}s max={np.max(times):.2f}s")
    return float(np.mean(r1)), float(np.mean(r2))


def load_cells(name: str, t: int):
    import tifffile

    fr = sorted(glob.glob(f"{DATA}/cells/{name}/frames/*.tif"))
    raw = tifffile.imread(fr[t]).astype(np.float32)
    img = ((raw - raw.min()) / max(float(raw.max() - raw.min()), 1.0))[..., None]
    mp = f"{DATA}/cells/{name}/masks/man_seg{t:03d}.tif"
    gt = tifffile.imread(mp) if os.path.exists(mp) else None
    return img, gt


def eval_cells(params: CPSMParams, name: str, t: int, mode: str, verbose: bool = True):
    img, gt = load_cells(name, t)
    if gt is None:
        print(f"no GT for {name} t={t}")
        return None
    ids = [int(i) for i in np.unique(gt) if i]
    scr = []
    for i in ids:
        m = gt == i
        if mode == "click":
            scr.append(Scribble(i, center_point(m)))
    if mode != "click":
        scr = first_round_scribbles(gt, ids)  # the benchmark's annotator
    t0 = time.perf_counter()
    pred = scribbles_to_mask(img, scr, params=params)
    dt = time.perf_counter() - t0
    js = [jaccard(pred == i, gt == i) for i in ids]
    print(f"{name} t={t} {mode}: {len(ids)} objects  per-object mean J={np.mean(js):.3f}  min={np.min(js):.3f}  "
          f"fg J={jaccard(pred > 0, gt > 0):.3f}  time={dt:.2f}s  shape={img.shape}")
    return float(np.mean(js))


def eval_cell_strokes(params: CPSMParams, verbose: bool = True) -> None:
    """Nuclei marked as a hurried user marks them: six ground-truth frames of each cell set,
    each nucleus given one horizontal dash of 0.6 of its diameter through its centroid, or a
    click at its centroid, or the benchmark's skeleton stroke; per-nucleus J, the mean over
    frames and the mean of each frame's worst nucleus (a dim nucleus the strokes miss)."""
    for name in ("Fluo-N2DH-GOWT1-02", "Fluo-N2DH-SIMplus-01"):
        ts = sorted(int(os.path.basename(p)[7:10]) for p in glob.glob(f"{DATA}/cells/{name}/masks/man_seg*.tif"))
        ts = ts[::max(1, len(ts) // 6)][:6]
        rows: dict[str, list[tuple[float, float]]] = {"dash": [], "click": [], "skeleton": []}
        for t in ts:
            img, gt = load_cells(name, t)
            ids = [int(i) for i in np.unique(gt) if i]
            for mode, row in rows.items():
                if mode == "skeleton":
                    scr = first_round_scribbles(gt, ids)
                else:
                    scr = []
                    for i in ids:
                        cy, cx = ndi.center_of_mass(gt == i)
                        r = 0.3 * np.sqrt((gt == i).sum() / np.pi)
                        pts = [[cy, cx - r], [cy, cx + r]] if mode == "dash" else [[cy, cx]]
                        scr.append(Scribble(i, np.array(pts)))
                pred = scribbles_to_mask(img, scr, params=params)
                js = [jaccard(pred == i, gt == i) for i in ids]
                row.append((float(np.mean(js)), float(np.min(js))))
                if verbose:
                    print(f"{name} t={t} {mode:8s} per-nucleus J {np.mean(js):.3f}  worst {np.min(js):.3f}")
        for mode, row in rows.items():
            a = np.array(row)
            print(f"{name} {mode:8s} {len(a)} frames: per-nucleus J {a[:, 0].mean():.4f}, "
                  f"worst nucleus per frame {a[:, 1].mean():.3f}")


def eval_memory(params: CPSMParams, seeds: int = 3, verbose: bool = True) -> None:
    """Self-reference refinement on DAVIS: the memory pool holds frame 0's true mask; one
    skeleton stroke on frames T/4, T/2, 3T/4 and T-1 (no prior, with the frame's motion), J
    without the pool and with it, averaged over ``seeds`` CPSM draws."""
    from dataclasses import replace

    from napari_ivoma.engine.appearance import MemoryPool

    rows = []
    for seq in DAVIS_SEQS:
        n = len(glob.glob(f"{DATA}/davis/{seq}/frames/*.jpg"))
        img0, gt0, _ = load_davis(seq, 0)
        pool = MemoryPool()
        pool.add(0, img0, gt0.astype(np.uint32))
        for t in (n // 4, n // 2, 3 * n // 4, n - 1):
            img, gt, _ = load_davis(seq, t)
            scr = first_round_scribbles(gt.astype(np.uint32), [1])
            mot = davis_motion(seq, t, n)
            js = [[jaccard(scribbles_to_mask(img, scr, memory=mem, params=replace(params, seed=k), motion=mot) == 1,
                           gt) for mem in (None, pool)] for k in range(seeds)]
            rows.append(np.mean(js, axis=0))
            if verbose:
                print(f"{seq:18s} t={t:3d}  J alone {rows[-1][0]:.3f}  with the memory pool {rows[-1][1]:.3f}")
    alone, pooled = np.mean(rows, axis=0)
    print(f"DAVIS, memory of frame 0, {len(rows)} frames x {seeds} draws: J alone {alone:.3f}, "
          f"with the memory pool {pooled:.3f}")


def eval_bg_stroke(params: CPSMParams, seeds: int = 4, verbose: bool = True) -> None:
    """A first round with a background stroke: DAVIS frames 0 and T/2, a skeleton stroke on the
    object and one background stroke along the ring 8-30 px around it (as a user circles the
    object), with the frame's motion; J averaged over ``seeds`` CPSM draws."""
    from dataclasses import replace

    import cv2

    from napari_ivoma.bench.annotator import skeleton_path

    js = []
    for seq in DAVIS_SEQS:
        n = len(glob.glob(f"{DATA}/davis/{seq}/frames/*.jpg"))
        for t in (0, n // 2):
            img, gt, _ = load_davis(seq, t)
            g = gt.astype(np.uint8)
            ring = (cv2.dilate(g, np.ones((61, 61), np.uint8)) > 0) & ~(cv2.dilate(g, np.ones((17, 17), np.uint8)) > 0)
            scr = first_round_scribbles(g.astype(np.uint32), [1]) + [Scribble(0, skeleton_path(largest_region(ring)))]
            mot = davis_motion(seq, t, n)
            js.append(float(np.mean([jaccard(scribbles_to_mask(img, scr, params=replace(params, seed=k), motion=mot) == 1,
                                             gt) for k in range(seeds)])))
            if verbose:
                print(f"{seq:18s} t={t:3d}  J {js[-1]:.3f}")
    print(f"DAVIS, object and background stroke, {len(js)} frames x {seeds} draws: J {np.mean(js):.4f}")


def _half_around(img: np.ndarray, gt: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``width`` columns of a frame centred on its object (within the frame)."""
    cols = np.nonzero(gt.any(axis=0))[0]
    c0 = int(np.clip((cols.min() + cols.max()) // 2 - width // 2, 0, gt.shape[1] - width))
    return img[:, c0:c0 + width], gt[:, c0:c0 + width]


def _frame_pair(a: str, b: str, which: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, object mask) of DAVIS sequences ``a`` and ``b``, both at frame 0 (``which`` 0)
    or both at their middle frame."""
    out = []
    for seq in (a, b):
        n = len(glob.glob(f"{DATA}/davis/{seq}/frames/*.jpg"))
        img, gt, _ = load_davis(seq, 0 if which == 0 else n // 2)
        out.append((img, gt))
    return out


def _per_object_j(img: np.ndarray, gt: np.ndarray, scr: list, params: CPSMParams, seeds: int) -> np.ndarray:
    """J of objects 1 and 2, each averaged over ``seeds`` CPSM draws of one call with all strokes."""
    from dataclasses import replace

    return np.mean([[jaccard(out == k, gt == k) for k in (1, 2)]
                    for out in (scribbles_to_mask(img, scr, params=replace(params, seed=s)) for s in range(seeds))],
                   axis=0)


def eval_pairs(params: CPSMParams, seeds: int = 2, verbose: bool = True, alone: bool = False) -> None:
    """Two objects in one frame: the halves of two DAVIS frames (frames 0 and T/2, each cut
    around its object) side by side, one skeleton stroke per object, no background stroke;
    per-object J averaged over ``seeds`` CPSM draws.  Objects cut by the halves' edges meet
    at the middle column, as touching animals do.  ``alone``: each object in a call of its own
    (its stroke only), the measure of what segmenting objects together costs."""
    from dataclasses import replace
    from itertools import combinations

    js = []
    for a, b in combinations(DAVIS_SEQS, 2):
        for which in (0, 1):
            halves = [_half_around(img, gt, img.shape[1] // 2) for img, gt in _frame_pair(a, b, which)]
            if halves[0][0].shape[0] != halves[1][0].shape[0]:
                continue
            img = np.concatenate([h[0] for h in halves], axis=1)
            gt = np.concatenate([halves[0][1].astype(np.uint32), 2 * halves[1][1].astype(np.uint32)], axis=1)
            scr = first_round_scribbles(gt, [1, 2])
            if alone:  # each object scribbled and segmented on its own
                pj = np.mean([[jaccard(scribbles_to_mask(img, [c for c in scr if c.object_id == k],
                                                         params=replace(params, seed=s)) == k, gt == k)
                               for k in (1, 2)] for s in range(seeds)], axis=0)
            else:
                pj = _per_object_j(img, gt, scr, params, seeds)
            js.extend(pj)
            if verbose:
                print(f"{a:17s}|{b:17s} {'0  ' if which == 0 else 'T/2'}  J {pj[0]:.3f} {pj[1]:.3f}")
    print(f"DAVIS pairs, {len(js)} objects x {seeds} draws: J {np.mean(js):.4f}  min {np.min(js):.3f}")


def _touching_composite(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                        overlap: float = 0.15) -> tuple[np.ndarray, np.ndarray] | None:
    """Frame ``a`` with the object of frame ``b`` pasted beside its object, overlapping its
    bounding box by ``overlap`` of the pasted object's width (in front of it); labels 1 and 2.
    None when the pasted object does not fit or hides most of ``a``'s object."""
    (img_a, gt_a), (img_b, gt_b) = a, b
    h, w = gt_a.shape
    ys, xs = np.nonzero(gt_b)
    b0, b1, c0, c1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if b1 - b0 > h or c1 - c0 > w:
        return None
    patch, pmask = img_b[b0:b1, c0:c1], gt_b[b0:b1, c0:c1]
    ya, xa = np.nonzero(gt_a)
    bw = c1 - c0
    top = int(np.clip((ya.min() + ya.max()) // 2 - (b1 - b0) // 2, 0, h - (b1 - b0)))
    left = xa.max() - int(overlap * bw)  # to the right of a's object ...
    if left + bw > w:
        left = xa.min() - bw + int(overlap * bw)  # ... or to its left
    if left < 0:
        return None
    img, gt = img_a.copy(), gt_a.astype(np.uint32)
    sl = (slice(top, top + b1 - b0), slice(left, left + bw))
    img[sl][pmask] = patch[pmask]
    gt[sl][pmask] = 2
    if (gt == 1).sum() < 0.5 * gt_a.sum() or not ((gt == 1) & (ndi.binary_dilation(gt == 2, iterations=2))).any():
        return None  # (most of a's object hidden, or the two do not touch)
    return img, gt


def eval_touching(params: CPSMParams, seeds: int = 2, verbose: bool = True) -> None:
    """Two real objects touching in one frame: the object of one DAVIS frame (frames 0 and
    T/2) pasted beside, and overlapping, the object of another sequence's frame, one skeleton
    stroke per object, no background stroke; per-object J averaged over ``seeds`` CPSM draws."""
    from itertools import permutations

    js = []
    for a, b in permutations(DAVIS_SEQS, 2):
        for which in (0, 1):
            frames = _frame_pair(a, b, which)
            if frames[0][0].shape != frames[1][0].shape:
                continue
            comp = _touching_composite(*frames)
            if comp is None:
                continue
            img, gt = comp
            scr = first_round_scribbles(gt, [1, 2])
            pj = _per_object_j(img, gt, scr, params, seeds)
            js.extend(pj)
            if verbose:
                print(f"{a:17s}<{b:17s} {'0  ' if which == 0 else 'T/2'}  J {pj[0]:.3f} {pj[1]:.3f}")
    print(f"DAVIS touching pairs, {len(js)} objects x {seeds} draws: J {np.mean(js):.4f}  min {np.min(js):.3f}")


def eval_natural(params: CPSMParams, seeds: int = 2, verbose: bool = True) -> None:
    """Objects that touch and pass in front of each other: every third frame of the generated
    natural clip (at 240x320 and at 480x854) holding two or more objects, one skeleton stroke per
    object, no background stroke; per-object J averaged over the objects and ``seeds`` draws."""
    from dataclasses import replace

    from napari_ivoma.engine.io import to_float_image
    from napari_ivoma.synthetic import make_natural_clip

    for shape in ((240, 320), (480, 854)):
        frames, labels = make_natural_clip(shape=shape)
        js = []
        for t in range(0, len(frames), 3):
            ids = [int(i) for i in np.unique(labels[t]) if i]
            if len(ids) < 2:
                continue
            img, scr = to_float_image(frames[t]), first_round_scribbles(labels[t], ids)
            js.append(float(np.mean([jaccard(out == k, labels[t] == k) for out in
                                     (scribbles_to_mask(img, scr, params=replace(params, seed=s)) for s in range(seeds))
                                     for k in ids])))
            if verbose:
                print(f"natural {shape[0]}x{shape[1]} t={t:2d} objects {ids}  J {js[-1]:.3f}")
        print(f"natural clip {shape[0]}x{shape[1]}, {len(js)} frames x {seeds} draws: per-object J {np.mean(js):.4f}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="*", default=["davis", "cells"])
    ap.add_argument("--frames", default="0,mid")
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("-q", action="store_true")
    ap.add_argument("--motion", action="store_true", help="give CPSM the frame's motion features")
    ap.add_argument("--seeds", type=int, default=3, help="CPSM draws per frame (memory, bgstroke, pairs, natural)")
    ap.add_argument("--alone", action="store_true", help="pairs: each object segmented in a call of its own")
    a = ap.parse_args(argv)
    kw = {}
    for s in a.param:
        k, v = s.split("=")
        default = getattr(CPSMParams(), k)
        if isinstance(default, bool):
            kw[k] = v.lower() in ("1", "true", "yes", "on")
        else:
            kw[k] = type(default)(float(v)) if "." in v or not v.isdigit() else type(default)(v)
    params = CPSMParams(**kw)
    print(params)
    if "davis" in a.what:
        eval_davis(params, a.frames.split(","), not a.q, a.motion)
    if "memory" in a.what:
        eval_memory(params, a.seeds, not a.q)
    if "bgstroke" in a.what:
        eval_bg_stroke(params, a.seeds, not a.q)
    if "pairs" in a.what:
        eval_pairs(params, a.seeds, not a.q, a.alone)
    if "natural" in a.what:
        eval_natural(params, a.seeds, not a.q)
    if "touching" in a.what:
        eval_touching(params, a.seeds, not a.q)
    if "strokes" in a.what:
        eval_cell_strokes(params, not a.q)
    if "cells" in a.what:
        eval_cells(params, "Fluo-N2DH-SIMplus-01", 0, "stroke")
        eval_cells(params, "Fluo-N2DH-SIMplus-01", 32, "stroke")
        eval_cells(params, "Fluo-N2DH-GOWT1-02", 1, "stroke")
        eval_cells(params, "Fluo-N2DH-SIMplus-01", 0, "click")


if __name__ == "__main__":
    sys.exit(main())
