"""Dev tool: record the benchmark's reference masks, then propagate from them with other parameters.

``record`` runs the DAVIS benchmark protocol (8 rounds, the simulated annotator) and keeps, per
sequence and seed, the scribbled frame and the whole prediction of every round (an .npz).
``replay`` puts the user references of chosen rounds back on a fresh session (the masks the
benchmark had on those frames after that round) and propagates: a change to MRGS is measured on
the references the benchmark really has, the same ones for every variant, so the annotator's
choices (which frame it corrects next) do not add their noise.  CPSM is not re-run: use
``ivoma-bench`` to confirm.

Usage::

    python tools/mrgs_refs.py record --out /tmp/refs [--seeds 0 1 2] [--param name=value ...]
    python tools/mrgs_refs.py replay /tmp/refs [--rounds 1,2,4,8] [--param name=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from napari_ivoma.bench.cli import parse_params
from napari_ivoma.bench.dataset import find_sequences, load_sequence
from napari_ivoma.bench.metrics import boundary_f, region_j
from napari_ivoma.bench.protocol import _as_numpy, default_session_factory, run_sequence
from napari_ivoma.engine import Session

DATA = os.environ.get("IVOMA_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def record(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        params = {**parse_params(args.param), "seed": seed}
        for path in find_sequences(Path(DATA) / "davis"):
            seq = load_sequence(path)
            make = default_session_factory(params=params)
            preds: list[np.ndarray] = []

            def factory(frames, make=make, preds=preds):
                s = make(frames)
                propagate = s.propagate

                def keep(*a, **k):
                    result = propagate(*a, **k)
                    preds.append(_as_numpy(result).astype(np.uint16))
                    return result

                s.propagate = keep
                return s

            res = run_sequence(seq, session_factory=factory)
            frames = [r["frame"] if not r["skipped"] else -1 for r in res["rounds"]]
            np.savez_compressed(out / f"{seq.name}_s{seed}.npz", preds=np.stack(preds), frames=frames)
            print(seq.name, seed, f"AUC {res['summary']['AUC']:.3f}", flush=True)


def replay(args) -> None:
    params = parse_params(args.param)
    rounds = [int(r) for r in args.rounds.split(",")]
    seqs: dict[str, object] = {}
    rows = []
    for path in sorted(Path(args.dir).glob("*.npz")):
        name, seed = path.stem.rsplit("_s", 1)
        if name not in seqs:
            seqs[name] = load_sequence(Path(DATA) / "davis" / name)
        seq = seqs[name]
        kept = np.load(path)
        preds, frames = kept["preds"], [int(f) for f in kept["frames"]]
        for r in rounds:
            s = Session(seq.frames, params=dict(params))
            for t in sorted({f for f in frames[:r] if f >= 0}):
                s.set_labels(t, preds[r - 1][t].astype(np.uint32))
            out = _as_numpy(s.propagate())
            j = np.mean([region_j(seq.masks[t] > 0, out[t] > 0) for t in range(len(out))])
            f = np.mean([boundary_f(seq.masks[t] > 0, out[t] > 0) for t in range(len(out))])
            rows.append((name, r, j, f))
            if args.verbose:
                print(f"{name:18s} seed {seed} round {r}: J {j:.3f} F {f:.3f}", flush=True)
    a = np.array([(r, j, f) for _, r, j, f in rows])
    for r in rounds:
        m = a[a[:, 0] == r]
        print(f"round {r}: J {m[:, 1].mean():.4f}  F {m[:, 2].mean():.4f}  J&F {m[:, 1:].mean():.4f}")
    for name in seqs:
        m = np.array([(j + f) / 2 for n, _, j, f in rows if n == name])
        print(f"{name:18s} J&F {m.mean():.4f}")
    print(f"all: J&F {a[:, 1:].mean():.4f}  (n={len(rows)})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--out", required=True)
    rec.add_argument("--seeds", type=int, nargs="+", default=[0])
    rec.add_argument("--param", action="append")
    rep = sub.add_parser("replay")
    rep.add_argument("dir")
    rep.add_argument("--rounds", default="1,2,4,8")
    rep.add_argument("--param", action="append")
    rep.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    record(args) if args.cmd == "record" else replay(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
