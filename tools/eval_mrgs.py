"""Dev check of MRGS alone: ground-truth masks set on reference frames, propagate, mean J per sequence.

    python tools/eval_mrgs.py [--refs 0] [--seq bear dog] [--param key=value ...]
    python tools/eval_mrgs.py --pan 110 [--param reentry=off]

``--pan W``: real footage in which the object leaves the frame and comes back.  Each DAVIS
frame is halved, then cropped to a window W px wide that pans away from the object (to the
side with more room) until it has left, and back (a sine over the clip).  Reported: J over
the frames where the object is in view, J over the frames after its return where at least 30%
of it is back, and the frames where it is out of view yet a mask remains (with the largest).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from napari_ivoma.bench.dataset import pan_out_and_back
from napari_ivoma.engine import Session

DATA = Path(os.environ.get("IVOMA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "davis"


def load(seq: Path, max_frames: int | None):
    fr = sorted((seq / "frames").iterdir())[:max_frames]
    ms = sorted((seq / "masks").iterdir())[:max_frames]
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in fr])
    masks = np.stack([(np.asarray(Image.open(p).convert("L")) > 127).astype(np.uint32) for p in ms])
    return frames, masks


def pan_scores(out: np.ndarray, masks: np.ndarray) -> str:
    area0 = (masks[0] == 1).sum()
    vis = (masks == 1).sum(axis=(1, 2)) / area0
    gone = [t for t in range(len(masks)) if vis[t] == 0]
    back = [t for t in range(len(masks)) if gone and t > gone[-1] and vis[t] >= 0.3]
    stuck = [int((out[t] == 1).sum()) for t in gone if (out[t] == 1).any()]
    j_in = np.mean([jaccard(out[t] == 1, masks[t] == 1) for t in range(len(masks)) if vis[t] > 0])
    j_back = np.mean([jaccard(out[t] == 1, masks[t] == 1) for t in back]) if back else float("nan")
    return (f"J in view {j_in:.3f}, J back {j_back:.3f} ({len(back)} frames), out of view {len(gone)} frames, "
            f"a mask on {len(stuck)} of them (largest {max(stuck, default=0)} px)")


def jaccard(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", nargs="*")
    ap.add_argument("--refs", default="0", help="comma list of reference frames; 'mid' = 0 and last")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--pan", type=int, default=None, help="window width (px of the halved frame): leave and return")
    args = ap.parse_args()
    params = dict(kv.split("=", 1) for kv in args.param)
    seqs = sorted(DATA.iterdir()) if not args.seq else [DATA / s for s in args.seq]
    res = []
    for seq in seqs:
        frames, masks = load(seq, args.max_frames)
        if args.pan:
            frames, masks = pan_out_and_back(frames, masks, args.pan)
        T = len(frames)
        refs = [0, T - 1] if args.refs == "ends" else [int(r) if r != "mid" else T // 2 for r in args.refs.split(",")]
        s = Session(frames, params=params)
        for r in refs:
            s.set_labels(r, masks[r])
        t0 = time.perf_counter()
        out = np.asarray(s.propagate())
        dt = time.perf_counter() - t0
        js = [jaccard(out[t] == 1, masks[t] == 1) for t in range(T)]
        res.append(np.mean(js))
        print(f"{seq.name:18s} J={np.mean(js):.3f} min={np.min(js):.3f} fps={(T - len(refs)) / dt:.1f}"
              + (f"  {pan_scores(out, masks)}" if args.pan else ""))
    print(f"{'mean':18s} J={np.mean(res):.3f}")


if __name__ == "__main__":
    main()
