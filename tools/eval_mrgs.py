"""Dev check of MRGS alone: ground-truth masks set on reference frames, propagate, mean J per sequence.

    python tools/eval_mrgs.py [--refs 0] [--seq bear dog] [--param key=value ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from napari_ivoma.engine import Session

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis"


def load(seq: Path, max_frames: int | None):
    fr = sorted((seq / "frames").iterdir())[:max_frames]
    ms = sorted((seq / "masks").iterdir())[:max_frames]
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in fr])
    masks = np.stack([(np.asarray(Image.open(p).convert("L")) > 127).astype(np.uint32) for p in ms])
    return frames, masks


def jaccard(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", nargs="*")
    ap.add_argument("--refs", default="0", help="comma list of reference frames; 'mid' = 0 and last")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--param", action="append", default=[])
    args = ap.parse_args()
    params = dict(kv.split("=", 1) for kv in args.param)
    seqs = sorted(DATA.iterdir()) if not args.seq else [DATA / s for s in args.seq]
    res = []
    for seq in seqs:
        frames, masks = load(seq, args.max_frames)
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
        print(f"{seq.name:18s} J={np.mean(js):.3f} min={np.min(js):.3f} fps={(T - len(refs)) / dt:.1f}")
    print(f"{'mean':18s} J={np.mean(res):.3f}")


if __name__ == "__main__":
    main()
