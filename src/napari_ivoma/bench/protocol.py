"""The interactive protocol: a simulated annotator drives a :class:`Session` for R rounds.

Round 1 scribbles every object on the frame chosen from an empty prediction;
rounds 2..R scribble corrections on the frame with the worst J of the current
prediction.  Every round calls the engine the way a user does::

    session.prepare(t, wait=True)                     # the user looks at frame t (the GUI
                                                      # prepares it while they draw), timed
    labels_t = session.add_scribbles(t, scribbles)   # CPSM, timed: the latency after a stroke
    masks = session.propagate()                       # MRGS, timed

and is scored on the whole sequence (J, F, J&F; SEG for instance labels).  A
round with nothing left to fix ends the sequence; its last scores are carried
over to the remaining rounds (those rounds are marked ``"skipped": true``).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import annotator
from .dataset import Sequence
from .metrics import frame_j, seg_score, sequence_scores

__all__ = ["run_sequence", "default_session_factory", "peak_rss_mb", "DEFAULT_ROUNDS", "ANNOTATOR_MODES"]

DEFAULT_ROUNDS = 8
ANNOTATOR_MODES = ("largest", "every-region")

SessionFactory = Callable[[np.ndarray], Any]


def default_session_factory(
    params: dict | None = None, backend: str | None = None
) -> SessionFactory:
    """A factory building ``napari_ivoma.engine.Session(frames, store=None, params=..., backend=...)``.

    ``params`` and ``backend`` are passed only when given.
    """
    kwargs: dict[str, Any] = {}
    if params:
        kwargs["params"] = dict(params)
    if backend:
        kwargs["backend"] = backend

    def make(frames: np.ndarray) -> Any:
        try:
            from napari_ivoma.engine import Session
        except ImportError as exc:  # pragma: no cover - depends on the engine being present
            raise RuntimeError(
                f"napari_ivoma.engine.Session is not available ({exc}); the benchmark needs the engine"
            ) from exc
        return Session(frames, store=None, **kwargs)

    return make


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (getrusage, psutil as a floor)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    try:
        import psutil

        peak_mb = max(peak_mb, psutil.Process().memory_info().rss / (1024 * 1024))
    except ImportError:  # pragma: no cover
        pass
    return float(peak_mb)


def _as_numpy(masks: Any) -> np.ndarray:
    """Materialise a numpy / dask / zarr (T, H, W) array."""
    if isinstance(masks, np.ndarray):
        return masks
    if hasattr(masks, "compute"):
        return np.asarray(masks.compute())
    return np.asarray(masks[...])


def _score(seq: Sequence, pred: np.ndarray) -> dict:
    scores = sequence_scores(seq.masks, pred, seq.n_objects)
    out = {
        "J": scores["J"],
        "F": scores["F"],
        "JF": scores["JF"],
        "J_per_object": scores["J_per_object"],
        "F_per_object": scores["F_per_object"],
        "J_per_frame": scores["J_per_frame"],
    }
    if seq.instance:
        out["SEG"] = seg_score(seq.masks, pred)
    return out


def _unnamed_share(seq: Sequence, named: set[int]) -> float:
    """Share of ground-truth object appearances (frame, id) whose id no scribble ever named."""
    present = np.zeros((seq.masks.shape[0], seq.n_objects + 1), dtype=bool)
    for t in range(seq.masks.shape[0]):
        present[t, np.unique(seq.masks[t])] = True
    present = present[:, 1:]
    total = int(present.sum())
    if total == 0:
        return 0.0
    unnamed = [k - 1 for k in seq.object_ids if k not in named]
    return float(present[:, unnamed].sum() / total)


def run_sequence(
    seq: Sequence,
    rounds: int = DEFAULT_ROUNDS,
    session_factory: SessionFactory | None = None,
    on_round: Callable[[dict], None] | None = None,
    annotator_mode: str = "largest",
) -> dict:
    """Run the protocol on one sequence.

    Parameters
    ----------
    seq : Sequence
    rounds : number of interaction rounds R (>= 1)
    session_factory : callable ``frames -> session`` (default: the engine's Session)
    on_round : called with each round's record (progress reporting)
    annotator_mode : ``"largest"`` (the benchmark's annotator: one corrective stroke per label,
        in its largest error region) or ``"every-region"`` (DAVIS's interactive robot: a stroke
        in every error region that survives an opening, see
        :func:`~napari_ivoma.bench.annotator.opened_error_regions`)

    Returns
    -------
    dict
        ``name``, ``frames``, ``objects``, ``instance``, ``rounds`` (list of per-round
        records, always ``rounds`` long), ``early_stop_round`` (round that found
        nothing to fix, or None) and a ``summary`` (see :func:`summarize`).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if annotator_mode not in ANNOTATOR_MODES:
        raise ValueError(f"annotator_mode must be one of {ANNOTATOR_MODES}, got {annotator_mode!r}")
    factory = session_factory or default_session_factory()
    t_count = seq.masks.shape[0]
    session = factory(seq.frames)
    annotator.declare_objects(session, seq.object_ids)  # automatic ids never take the annotator's
    records: list[dict] = []
    named: set[int] = set()
    pred: np.ndarray | None = None
    early_stop: int | None = None
    for r in range(1, rounds + 1):
        t, j_worst = annotator.worst_frame(seq.masks, pred, seq.n_objects)
        if r == 1:
            scribbles = annotator.first_round_scribbles(seq.masks[t], seq.object_ids)
        else:
            scribbles = annotator.correction_scribbles(seq.masks[t], pred[t], seq.object_ids,
                                                       every_region=annotator_mode == "every-region")
        if not scribbles:
            if pred is None:
                raise RuntimeError(f"{seq.name}: no object to scribble on frame {t}")
            early_stop = r
            break
        before = np.zeros(seq.masks.shape[1:], np.uint32) if pred is None else pred[t]
        j_before = frame_j(seq.masks[t], before, seq.n_objects)
        tic = time.perf_counter()
        if hasattr(session, "prepare"):  # what the GUI does while the user draws
            session.prepare(t, wait=True)
        prepare_s = time.perf_counter() - tic
        tic = time.perf_counter()
        labels_t = np.asarray(session.add_scribbles(t, scribbles))
        cpsm_s = time.perf_counter() - tic
        j_scribbled = frame_j(seq.masks[t], labels_t, seq.n_objects)
        tic = time.perf_counter()
        pred = _as_numpy(session.propagate())
        prop_s = time.perf_counter() - tic
        if pred.shape != seq.masks.shape:
            raise RuntimeError(
                f"{seq.name}: propagate() returned shape {pred.shape}, expected {seq.masks.shape}"
            )
        named.update(s.object_id for s in scribbles if s.object_id > 0)
        record = {
            "round": r,
            "skipped": False,
            "frame": t,
            "frame_J_worst": j_worst,
            "n_scribbles": len(scribbles),
            "scribble_ids": sorted({s.object_id for s in scribbles}),
            "scribbled_frame_J_before": j_before,
            "scribbled_frame_J_after_scribbles": j_scribbled,
            "scribbled_frame_J_after_propagation": frame_j(seq.masks[t], pred[t], seq.n_objects),
            "scribbled_frame_worse": bool(j_scribbled < j_before - 1e-9),
            "prepare_seconds": prepare_s,
            "cpsm_seconds": cpsm_s,
            "propagation_seconds": prop_s,
            "propagation_fps": t_count / prop_s if prop_s > 0 else None,
            "unnamed_share": _unnamed_share(seq, named),
            "peak_rss_mb": peak_rss_mb(),
            **_score(seq, pred),
        }
        records.append(record)
        if on_round is not None:
            on_round(record)
    if early_stop is not None:
        last = records[-1]
        for r in range(early_stop, rounds + 1):
            carried = {k: v for k, v in last.items() if k not in _ROUND_ONLY}
            carried.update(round=r, skipped=True)
            records.append(carried)
            if on_round is not None:
                on_round(carried)
    result = {
        "name": seq.name,
        "path": str(seq.path),
        "frames": int(t_count),
        "height": int(seq.masks.shape[1]),
        "width": int(seq.masks.shape[2]),
        "objects": int(seq.n_objects),
        "instance": bool(seq.instance),
        "annotator": annotator_mode,
        "early_stop_round": early_stop,
        "rounds": records,
    }
    result["summary"] = summarize(result)
    return result


#: per-round keys that describe the interaction itself (not carried over to skipped rounds)
_ROUND_ONLY = {
    "frame",
    "frame_J_worst",
    "n_scribbles",
    "scribble_ids",
    "scribbled_frame_J_before",
    "scribbled_frame_J_after_scribbles",
    "scribbled_frame_J_after_propagation",
    "scribbled_frame_worse",
    "prepare_seconds",
    "cpsm_seconds",
    "propagation_seconds",
    "propagation_fps",
}


def summarize(result: dict) -> dict:
    """Summary of one sequence: AUC, J&F after round 1 and R, timings, memory."""
    recs = result["rounds"]
    done = [r for r in recs if not r["skipped"]]
    jf = [r["JF"] for r in recs]
    cpsm = [r["cpsm_seconds"] for r in done]
    prep = [r.get("prepare_seconds", 0.0) for r in done]
    prop = [r["propagation_seconds"] for r in done]
    mean_prop = float(np.mean(prop)) if prop else None
    last = recs[-1]
    return {
        "AUC": float(np.mean(jf)),
        "JF_r1": recs[0]["JF"],
        "JF_rR": last["JF"],
        "J_rR": last["J"],
        "F_rR": last["F"],
        "JF_per_round": jf,
        "scribbled_frame_J_r1": recs[0]["scribbled_frame_J_after_scribbles"],
        "scribbled_frame_worse_rounds": [r["round"] for r in done if r["scribbled_frame_worse"]],
        "SEG_rR": last.get("SEG"),
        "unnamed_share_rR": last["unnamed_share"],
        "rounds_run": len(done),
        "seconds_per_round_cpsm": float(np.mean(cpsm)) if cpsm else None,
        "seconds_per_round_propagation": mean_prop,
        "cpsm_latency_per_frame": float(np.mean(cpsm)) if cpsm else None,
        "cpsm_latency_round1": cpsm[0] if cpsm else None,
        "cpsm_latency_corrections": float(np.mean(cpsm[1:])) if len(cpsm) > 1 else None,
        "seconds_per_round_prepare": float(np.mean(prep)) if prep else None,
        "propagation_fps": result["frames"] / mean_prop if mean_prop else None,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in recs),
    }
