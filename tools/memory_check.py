"""Peak memory of propagating a long generated 640x480 video lazily into a zarr store.

    python tools/memory_check.py [--frames 1500] [--store /tmp/long.ivoma.zarr]
    python tools/memory_check.py --export /tmp/long_export [--store /tmp/long.ivoma.zarr]

Frames are generated on demand by a dask array (a textured disc moving over a textured
background), so neither the video nor the masks are ever held whole in memory.  ``--export``
instead exports the masks of a store made by a first run, in every format (one process, so the
peak memory is the export's), and reports the speed and size of each.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time

import dask.array as da
import numpy as np
from dask import delayed
from scipy import ndimage

from napari_ivoma.engine import Session

H, W = 480, 640


def _background() -> np.ndarray:
    rng = np.random.default_rng(0)
    bg = ndimage.gaussian_filter(rng.standard_normal((H, W, 3)), (4, 4, 0))
    return ((bg - bg.min()) / np.ptp(bg) * 120 + 40).astype(np.uint8)


BG = _background()


YY, XX = np.mgrid[0:H, 0:W]


def frame(t: int) -> np.ndarray:
    yy, xx = YY, XX
    cy = H / 2 + 120 * np.sin(t / 40)
    cx = W / 2 + 200 * np.cos(t / 55)
    img = BG.copy()
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 60**2
    img[disc] = np.array([220, 120, 60], np.uint8) + (BG[disc] // 4)
    return img


def mask(t: int) -> np.ndarray:
    yy, xx = YY, XX
    cy = H / 2 + 120 * np.sin(t / 40)
    cx = W / 2 + 200 * np.cos(t / 55)
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < 60**2).astype(np.uint32)


def export_all(store: str, out: str) -> None:
    from pathlib import Path

    from napari_ivoma.engine import read_store_labels
    from napari_ivoma.engine.export import EXPORT_FORMATS, export_masks

    labels = read_store_labels(store)
    n = labels.shape[0]
    for fmt in EXPORT_FORMATS:
        folder = Path(out) / fmt
        shutil.rmtree(folder, ignore_errors=True)
        tic = time.perf_counter()
        paths = export_masks(labels, folder, fmt, max_id=1)
        dt = time.perf_counter() - tic
        size = sum(p.stat().st_size for p in paths) / n / 1024
        print(f"export {fmt}: {n} frames in {dt:.1f} s ({n / dt:.0f} frames/s), {size:.1f} KiB per frame")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--store", default="/tmp/ivoma_long.ivoma.zarr")
    ap.add_argument("--export", default=None, help="export the store's masks into this folder instead")
    args = ap.parse_args()
    if args.export:
        export_all(args.store, args.export)
        return
    shutil.rmtree(args.store, ignore_errors=True)
    frames = da.stack([da.from_delayed(delayed(frame)(t), (H, W, 3), np.uint8) for t in range(args.frames)])
    s = Session(frames, store=args.store)
    s.set_labels(0, mask(0))
    s.set_labels(args.frames - 1, mask(args.frames - 1))
    tic = time.perf_counter()
    s.propagate()
    dt = time.perf_counter() - tic
    ious = []
    for t in range(0, args.frames, 50):
        p, g = np.asarray(s.labels[t]) > 0, mask(t) > 0
        ious.append((p & g).sum() / max((p | g).sum(), 1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.frames} frames {H}x{W}: propagation {dt:.0f} s ({(args.frames - 2) / dt:.1f} frames/s), "
          f"peak RSS {peak:.0f} MB, mean IoU (every 50th frame) {np.mean(ious):.3f}")


if __name__ == "__main__":
    main()
