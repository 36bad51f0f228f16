"""Speed, memory and quality on large frames: a DAVIS sequence upscaled to 1080p, 1440p or 4K
(reads ../shared/data, never copies it; the upscaled frames stay in memory).

Frame 0 gets one horizontal stroke through the object's middle row; the script times
``Session.prepare`` (done in the background while the user looks at a frame), then
``add_scribbles`` on the prepared frame, then ``propagate`` over the other frames, and prints J
against the upscaled ground truth and the process's peak memory.  Run it alone on the machine::

    python tools/large_frames.py --size 3840x2160 --seq dog --frames 12
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import cv2
import numpy as np

from napari_ivoma.bench.dataset import read_mask
from napari_ivoma.bench.metrics import frame_j
from napari_ivoma.engine import Scribble, Session
from napari_ivoma.engine.io import read_image

DATA = Path(os.environ.get("IVOMA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "davis"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="3840x2160", help="W x H of the upscaled frames")
    ap.add_argument("--seq", default="dog")
    ap.add_argument("--frames", type=int, default=12)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    folder = DATA / a.seq
    if not folder.is_dir():
        raise SystemExit(f"no DAVIS sequence at {folder} (set IVOMA_DATA)")
    frame_files = sorted((folder / "frames").iterdir())[: a.frames]
    mask_files = sorted((folder / "masks").iterdir())[: a.frames]
    frames = np.stack([cv2.resize(read_image(f)[..., :3], (w, h), interpolation=cv2.INTER_LINEAR)
                       for f in frame_files])
    truth = np.stack([cv2.resize((read_mask(f)[0] > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                      for f in mask_files])
    rows, cols = np.nonzero(truth[0])
    row = int(np.median(rows))
    across = cols[rows == row]
    inset = 40 * w // 3840
    session = Session(frames)
    tic = time.perf_counter()
    session.prepare(0)
    session._prepared_frame(0)  # (waits for the background work)
    prepared = time.perf_counter() - tic
    tic = time.perf_counter()
    labels = session.add_scribbles(0, [Scribble(1, [[row, across.min() + inset], [row, across.max() - inset]])])
    cpsm = time.perf_counter() - tic
    tic = time.perf_counter()
    session.propagate()
    prop = time.perf_counter() - tic
    masks = np.asarray(session.labels)
    j = np.mean([frame_j(truth[t], masks[t], 1) for t in range(len(masks))])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{a.seq} {w}x{h}, {len(frames)} frames: prepare {prepared:.2f} s, scribbles -> mask {cpsm:.2f} s "
          f"(J {frame_j(truth[0], labels, 1):.3f}), propagation {(len(frames) - 1) / prop:.2f} frames/s "
          f"(mean J {j:.3f}), peak memory {peak:.1f} GiB")


if __name__ == "__main__":
    main()
