"""Dev tool: record the benchmark's CPSM calls, then replay them with other parameters.

``dump`` runs the DAVIS benchmark protocol (8 rounds, the simulated annotator) and pickles
every ``scribbles_to_mask`` call the session makes: the strokes, the prior (the propagated
mask the user corrects), the memory pool as it was, the frame's motion and the ground
truth.  ``replay`` re-runs CPSM alone on those calls, so a change to CPSM is measured on the
frames the benchmark really corrects in seconds instead of minutes (propagation and the
annotator's later choices are not re-run: use ``ivoma-bench`` to confirm).

Usage::

    python tools/cpsm_cases.py dump --out /tmp/cases_s0 [--param seed=0 ...]
    python tools/cpsm_cases.py replay /tmp/cases_s0 [/tmp/cases_s1 ...] [--param name=value ...]
    python tools/cpsm_cases.py replay /tmp/cases_s0 --kind r1 --rng-seeds 10 [--param name=value ...]
    python tools/cpsm_cases.py dump --out /tmp/car_s0 --seqs car-shadow --param seed=0
    python tools/cpsm_cases.py time /tmp/cases_s0 /tmp/cases_s1 --variant "" --variant correction_band=12

``time`` measures CPSM's latency as the GUI meets it (each frame prepared beforehand) for
parameter variants, interleaved call by call so that the machine's load hits them alike: the
fastest of ``--reps`` runs of each recorded correction (``--kind`` as for ``replay``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import copy
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from napari_ivoma.bench.cli import parse_params
from napari_ivoma.bench.dataset import find_sequences, load_sequence
from napari_ivoma.bench.metrics import frame_j
from napari_ivoma.bench.protocol import run_sequence
from napari_ivoma.engine import Session
from napari_ivoma.engine.backends import ClassicalBackend

DATA = os.environ.get("IVOMA_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


class _Recorder(ClassicalBackend):
    def __init__(self, params, out: Path, seq):
        super().__init__(dict(params))
        self.out, self.seq, self.n = out, seq, 0

    def scribbles_to_mask(self, image, scribbles, prior, new_ids, memory, motion=None, prepared=None):
        case = dict(seq=self.seq.name, image=image, scribbles=scribbles, prior=prior, new_ids=new_ids,
                    memory=copy.deepcopy(memory), motion=motion)
        labels = super().scribbles_to_mask(image, scribbles, prior, new_ids, memory, motion, prepared)
        case["labels"] = labels
        self.n += 1
        with open(self.out / f"{self.seq.name}_{self.n:02d}.pkl", "wb") as fh:
            pickle.dump(case, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return labels


def dump(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = parse_params(args.param)
    for path in find_sequences(Path(DATA) / "davis"):
        if args.seqs and path.name not in args.seqs:
            continue
        seq = load_sequence(path)
        def factory(frames, seq=seq):
            return Session(frames, store=None, backend=_Recorder(params, out, seq))

        res = run_sequence(seq, rounds=args.rounds, session_factory=factory)
        # attach the ground truth of each recorded frame (the protocol's frame per round)
        frames = [r["frame"] for r in res["rounds"] if not r["skipped"]]
        for k, t in enumerate(frames, start=1):
            path = out / f"{seq.name}_{k:02d}.pkl"
            case = pickle.loads(path.read_bytes())
            case["t"], case["gt"], case["n_objects"] = t, seq.masks[t], seq.n_objects
            case["params"] = dict(params)
            path.write_bytes(pickle.dumps(case, protocol=pickle.HIGHEST_PROTOCOL))
        print(seq.name, f"AUC {res['summary']['AUC']:.3f}", flush=True)


_frames: dict[str, list[np.ndarray]] = {}


def _with_colour_change(c: dict) -> np.ndarray:
    """The recorded motion with the colour-change channels added (recordings made before they
    existed hold 3 channels per neighbouring frame): computed from the sequence's frames, the
    recorded residual motion kept as it was."""
    from napari_ivoma.engine.motion import (
        MOTION_CHANNELS,
        FlowCache,
        camera_homography,
        colour_change,
        to_gray_u8,
    )

    motion = c["motion"]
    if motion is None or motion.shape[2] % MOTION_CHANNELS == 0:
        return motion
    if c["seq"] not in _frames:
        seq = load_sequence(Path(DATA) / "davis" / c["seq"])
        _frames[c["seq"]] = [np.asarray(f, np.float32) / 255.0 for f in seq.frames]
    frames, t = _frames[c["seq"]], c["t"]
    nbrs = [u for u in (t - 1, t + 1) if 0 <= u < len(frames)]
    flows = FlowCache(lambda u: to_gray_u8(frames[u]), "medium", scale=0.5)
    parts = []
    for k, u in enumerate(nbrs):
        change = colour_change(frames[t], frames[u], camera_homography(flows.flow(t, u)))
        parts += [motion[..., 3 * k:3 * k + 3], change[..., None]]
    return np.concatenate(parts, axis=2)


def _recorded_calls(dirs: list[str], kind: str):
    """(path, call) of every recorded CPSM call in ``dirs`` of the ``kind`` asked ("all", "r1",
    "corrections"), its motion upgraded to the current layout."""
    for d in dirs:
        for path in sorted(Path(d).glob("*.pkl")):
            c = pickle.loads(path.read_bytes())
            if kind != "all" and (c["prior"] is None) != (kind == "r1"):
                continue
            c["motion"] = _with_colour_change(c)
            yield path, c


def replay(args) -> None:
    from napari_ivoma.engine import warm_up_kernels
    from napari_ivoma.engine.cpsm import scribbles_to_mask

    warm_up_kernels(wait=True)
    rows = []
    for path, c in _recorded_calls(args.dirs, args.kind):
        # the recorded run's parameters (its seed), overridden by --param; with --rng-seeds
        # CPSM's own randomness (samples, trees) is averaged over seeds 0..K-1 instead
        params = {**c.get("params", {}), **parse_params(args.param)}
        seeds = range(args.rng_seeds) if args.rng_seeds else [params.get("seed", 0)]
        n = c["n_objects"]
        before = c["prior"] if c["prior"] is not None else np.zeros_like(c["gt"], np.uint32)
        j_before, j_recorded = frame_j(c["gt"], before, n), frame_j(c["gt"], c["labels"], n)
        for seed in seeds:
            be = ClassicalBackend({**params, "seed": seed})
            tic = time.perf_counter()
            lab = scribbles_to_mask(c["image"], c["scribbles"], prior=c["prior"], new_ids=c["new_ids"],
                                    memory=c["memory"], params=be.cpsm_params, motion=c["motion"])
            dt = time.perf_counter() - tic
            rows.append((f"{path.stem}@{seed}", c["prior"] is not None, j_before, j_recorded,
                         frame_j(c["gt"], lab, n), dt))
    if args.verbose:
        for r in rows:
            print(f"{r[0]:28s} {'corr' if r[1] else 'r1  '} before {r[2]:.3f} recorded {r[3]:.3f} now {r[4]:.3f} "
                  f"{r[5]:.2f}s")
    for kind, sel in (("round 1", [r for r in rows if not r[1]]), ("corrections", [r for r in rows if r[1]])):
        if not sel:
            continue
        a = np.array([r[2:] for r in sel])
        worse = int((a[:, 2] < a[:, 0] - 1e-9).sum())
        print(f"{kind:12s} n={len(sel):3d}  J recorded {a[:, 1].mean():.4f}  now {a[:, 2].mean():.4f}  "
              f"worse {worse}  s mean {a[:, 3].mean():.2f} max {a[:, 3].max():.2f}")


def timing(args) -> None:
    from napari_ivoma.engine import warm_up_kernels
    from napari_ivoma.engine.cpsm import prepare_frame, scribbles_to_mask

    warm_up_kernels(wait=True)
    variants = [parse_params([kv for kv in v.split(",") if kv]) for v in args.variant or [""]]
    best: list[list[float]] = [[] for _ in variants]
    for _path, c in _recorded_calls(args.dirs, args.kind):
        runs = []
        for v in variants:
            be = ClassicalBackend({**c.get("params", {}), **v})
            runs.append((be.cpsm_params, prepare_frame(c["image"], be.cpsm_params)))
        times: list[list[float]] = [[] for _ in variants]
        for _ in range(args.reps):
            for i, (params, prepared) in enumerate(runs):
                tic = time.perf_counter()
                scribbles_to_mask(c["image"], c["scribbles"], prior=c["prior"], new_ids=c["new_ids"],
                                  memory=c["memory"], params=params, motion=c["motion"], prepared=prepared)
                times[i].append(time.perf_counter() - tic)
        for i in range(len(variants)):
            best[i].append(min(times[i]))
    for v, b in zip(args.variant or [""], best):
        a = np.array(b)
        print(f"{v or '(defaults)':32s} n={len(a):3d}  s median {np.median(a):.3f}  mean {a.mean():.3f}  "
              f"90% {np.percentile(a, 90):.3f}  max {a.max():.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--out", required=True)
    d.add_argument("--rounds", type=int, default=8)
    d.add_argument("--seqs", nargs="+", help="only these sequences (default: all)")
    d.add_argument("--param", action="append")
    r = sub.add_parser("replay")
    r.add_argument("dirs", nargs="+")
    r.add_argument("--param", action="append")
    r.add_argument("-v", "--verbose", action="store_true")
    r.add_argument("--kind", choices=("all", "r1", "corrections"), default="all")
    r.add_argument("--rng-seeds", type=int, default=0,
                   help="replay every call with CPSM seeds 0..K-1 (the benchmark's round-1 strokes do not "
                        "depend on its seed: one seed's round-1 calls with K seeds measure a change free of "
                        "CPSM's own sampling noise)")
    tm = sub.add_parser("time")
    tm.add_argument("dirs", nargs="+")
    tm.add_argument("--variant", action="append",
                    help='parameters of one variant, "name=value,name=value" ("" = the defaults); repeat')
    tm.add_argument("--kind", choices=("all", "r1", "corrections"), default="corrections")
    tm.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    {"dump": dump, "replay": replay, "time": timing}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
