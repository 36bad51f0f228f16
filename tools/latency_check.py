"""CPSM latency through ``Session.add_scribbles`` on DAVIS, as a user meets it (reads
../shared/data, never copies it).

For each sequence: round 1 on frame 0 after ``Session.prepare`` (what the GUI does while the user
looks at the frame and draws; three repeats, the fastest) and without it, then three correction
rounds of the benchmark's simulated annotator on prepared frames.  Run it alone on the machine::

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

DATA = Path(os.environ.get("IVOMA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "davis"
SEQS = ["bear", "blackswan", "breakdance-flare", "car-shadow", "dog"]


def main() -> None:
    if not DATA.is_dir():
        raise SystemExit(f"no DAVIS data at {DATA} (set IVOMA_DATA to the folder holding davis/)")
    r1s, colds, cors = [], [], []
    warm_up_kernels(wait=True)  # as on a machine that has run the tool before
    for name in SEQS:
        seq = load_sequence(DATA / name)
        strokes = annotator.first_round_scribbles(seq.masks[0], seq.object_ids)
        best, cold = [], []
        for _ in range(3):
            s = Session(seq.frames)
            s.image(0)  # decoded already: the viewer shows it
            tic = time.perf_counter()
            s.prepare(0, wait=True)
            t_prep = time.perf_counter() - tic
            tic = time.perf_counter()
            s.add_scribbles(0, strokes)
            best.append(time.perf_counter() - tic)
            cold.append(t_prep + best[-1])
        r1s.append(min(best))
        colds.append(min(cold))
        pred = np.asarray(s.propagate()[...])
        corr = []
        for _ in range(3):
            t, _ = annotator.worst_frame(seq.masks, pred, seq.n_objects)
            fix = annotator.correction_scribbles(seq.masks[t], pred[t], seq.object_ids)
            s.prepare(t, wait=True)
            s.memory._ready()  # the memory pool's features of earlier rounds are computed
            tic = time.perf_counter()
            s.add_scribbles(t, fix)
            corr.append(time.perf_counter() - tic)
            pred = np.asarray(s.propagate()[...])
        cors += corr
        print(f"{name:17s} round 1 {min(best):.2f} s (prepare + scribbles {min(cold):.2f} s), "
              f"corrections {' '.join(f'{x:.2f}' for x in corr)} s", flush=True)
    print(f"round 1: median {np.median(r1s):.2f} s, max {max(r1s):.2f} s; without preparing median "
          f"{np.median(colds):.2f} s; corrections median {np.median(cors):.2f} s, "
          f"range {min(cors):.2f}-{max(cors):.2f} s")


if __name__ == "__main__":
    main()
