"""CPSM latency through ``Session.add_scribbles`` on DAVIS, as a user meets it (reads
../shared/data, never copies it).

For each sequence: round 1 on frame 0 after ``Session.prepare`` (what the GUI does while the user
looks at the frame and draws; three repeats, the fastest) and without it, then three correction
rounds of the benchmark's simulated annotator on prepared frames.  Then the same on the generated
natural clip made at 480x854 with its three objects (the DAVIS sequences here have one each).
Run it alone on the machine::

    python tools/latency_check.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from napari_ivoma.bench import annotator
from napari_ivoma.bench.dataset import load_sequence
from napari_ivoma.engine import Session, warm_up_kernels
from napari_ivoma.synthetic import make_natural_clip

DATA = Path(os.environ.get("IVOMA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "davis"
SEQS = ["bear", "blackswan", "breakdance-flare", "car-shadow", "dog"]


def time_clip(name: str, frames, masks: np.ndarray, object_ids: list[int], n_objects: int) -> tuple:
    """Round 1 on frame 0 (prepared, and with the preparation) and three corrections; seconds."""
    strokes = annotator.first_round_scribbles(masks[0], object_ids)
    best, cold = [], []
    for _ in range(3):
        s = Session(frames)
        s.image(0)  # decoded already: the viewer shows it
        tic = time.perf_counter()
        s.prepare(0, wait=True)
        t_prep = time.perf_counter() - tic
        tic = time.perf_counter()
        s.add_scribbles(0, strokes)
        best.append(time.perf_counter() - tic)
        cold.append(t_prep + best[-1])
    pred = np.asarray(s.propagate()[...])
    corr = []
    for _ in range(3):
        t, _ = annotator.worst_frame(masks, pred, n_objects)
        fix = annotator.correction_scribbles(masks[t], pred[t], object_ids)
        s.prepare(t, wait=True)
        s.memory._ready()  # the memory pool's features of earlier rounds are computed
        tic = time.perf_counter()
        s.add_scribbles(t, fix)
        corr.append(time.perf_counter() - tic)
        pred = np.asarray(s.propagate()[...])
    print(f"{name:17s} round 1 {min(best):.2f} s (prepare + scribbles {min(cold):.2f} s), "
          f"corrections {' '.join(f'{x:.2f}' for x in corr)} s", flush=True)
    return min(best), min(cold), corr


def main() -> None:
    if not DATA.is_dir():
        raise SystemExit(f"no DAVIS data at {DATA} (set IVOMA_DATA to the folder holding davis/)")
    r1s, colds, cors = [], [], []
    warm_up_kernels(wait=True)  # as on a machine that has run the tool before
    for name in SEQS:
        seq = load_sequence(DATA / name)
        r1, cold, corr = time_clip(name, seq.frames, seq.masks, seq.object_ids, seq.n_objects)
        r1s.append(r1)
        colds.append(cold)
        cors += corr
    print(f"round 1: median {np.median(r1s):.2f} s, max {max(r1s):.2f} s; without preparing median "
          f"{np.median(colds):.2f} s; corrections median {np.median(cors):.2f} s, "
          f"range {min(cors):.2f}-{max(cors):.2f} s")
    # three objects at 480p: the generated natural clip at DAVIS's size (DAVIS's sequences here have one)
    frames, masks = make_natural_clip(n_frames=40, shape=(480, 854))
    time_clip("natural 3 objects", frames, masks, [1, 2, 3], 3)


if __name__ == "__main__":
    main()
