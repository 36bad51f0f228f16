"""``ivoma``: command-line entry points (the headless demo and small store utilities)."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "run_demo", "overlay_strip"]


def overlay_strip(frames: np.ndarray, labels: np.ndarray, picks: list[int], path: Path,
                  gt: np.ndarray | None = None) -> Path:
    """Save a PNG strip of a few frames with the masks drawn on them (top row), ground truth below.

    Parameters
    ----------
    frames : (T, H, W[, C]) array
    labels : (T, H, W) uint32 predicted masks
    picks : frame indices to show
    path : output PNG
    gt : optional (T, H, W) ground truth, drawn as a second row
    """
    import cv2
    from PIL import Image

    from .engine.io import to_float_image

    rng = np.random.default_rng(7)
    palette = rng.integers(60, 255, size=(4096, 3)).astype(np.float32)
    rows = []
    for lab in [labels] + ([gt] if gt is not None else []):
        tiles = []
        for t in picks:
            img = to_float_image(np.asarray(frames[t]))
            img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
            rgb = (img * 255).astype(np.float32)
            m = np.asarray(lab[t]).astype(np.int64)
            col = palette[m % len(palette)]
            fg = m > 0
            rgb[fg] = 0.5 * rgb[fg] + 0.5 * col[fg]
            edges = cv2.morphologyEx(m.astype(np.uint16), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
            rgb[edges] = col[edges]
            tile = rgb.clip(0, 255).astype(np.uint8)
            cv2.putText(tile, f"t={t}", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def run_demo(out: Path, clips: list[str], samples_root: Path | None = None,
             corrections: int = 2) -> list[dict]:
    """Scribbles on one frame -> CPSM -> MRGS -> zarr store, then a few correction rounds, on the
    generated sample clips; a simulated user (the benchmark's annotator) draws the strokes."""
    from .bench.annotator import (
        correction_scribbles,
        declare_objects,
        first_round_scribbles,
        worst_frame,
    )
    from .bench.dataset import load_sequence
    from .bench.metrics import seg_score, sequence_scores
    from .engine import Session, is_mask_store
    from .synthetic import ensure_sample_clips

    out.mkdir(parents=True, exist_ok=True)
    folders = ensure_sample_clips(samples_root)
    results = []
    for name in clips:
        seq = load_sequence(folders[name])
        store = out / f"{name}.ivoma.zarr"
        if store.exists():
            if not is_mask_store(store):
                raise FileExistsError(f"{store} exists and is not a mask store; move it away first")
            shutil.rmtree(store)  # the demo's own output of a previous run
        session = Session(seq.frames, store=store, source=f"napari-ivoma sample clip '{name}'")
        declare_objects(session, seq.object_ids)  # the simulated user's ids (see the benchmark)
        n = len(seq.frames)
        print(f"[{name}] {n} frames, {seq.n_objects} objects")
        pred, res = None, {}
        for r in range(1 + corrections):
            if r == 0:
                t = 0
                scribbles = first_round_scribbles(seq.masks[t], seq.object_ids)
            else:
                t, _ = worst_frame(seq.masks, pred, seq.n_objects)
                scribbles = correction_scribbles(seq.masks[t], pred[t], seq.object_ids)
                if not scribbles:
                    break
            session.prepare(t, wait=True)  # as the viewer does while the user draws
            tic = time.perf_counter()
            session.add_scribbles(t, scribbles)
            t_cpsm = time.perf_counter() - tic
            tic = time.perf_counter()
            pred = np.asarray(session.propagate(progress=_progress_bar(f"{name} round {r + 1}")))
            t_prop = time.perf_counter() - tic
            scores = sequence_scores(seq.masks, pred, seq.n_objects)
            res = {"clip": name, "frames": n, "objects": seq.n_objects, "rounds": r + 1,
                   "J": scores["J"], "F": scores["F"], "JF": scores["JF"], "store": str(store)}
            if seq.instance:
                res["SEG"] = float(np.mean([v for v in (seg_score(seq.masks[k], pred[k]) for k in range(n))
                                            if v is not None]))
            what = "scribbles" if r == 0 else "corrections"
            print(f"  round {r + 1}: {len(scribbles)} {what} on frame {t} -> J&F {res['JF']:.3f} "
                  f"(J {res['J']:.3f}, F {res['F']:.3f})" + (f", SEG {res['SEG']:.3f}" if "SEG" in res else "")
                  + f"; CPSM {t_cpsm:.2f} s, propagation {t_prop:.1f} s")
        picks = sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})
        res["overlay"] = str(overlay_strip(seq.frames, pred, picks, out / f"{name}_overlay.png", gt=seq.masks))
        results.append(res)
        print(f"  masks: {store}\n  overlay: {res['overlay']} (top: masks, bottom: ground truth)")
    return results


def _progress_bar(desc: str):
    """A progress callback drawing a terminal bar (quiet when the output is not a terminal)."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=desc, unit="frame", file=sys.stderr, leave=False, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return progress


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ivoma", description="napari-ivoma command line")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run scribbles -> CPSM -> MRGS on the generated sample clips")
    d.add_argument("--out", type=Path, default=Path("demo_out"))
    d.add_argument("--clip", choices=["natural", "nuclei", "all"], default="all")
    d.add_argument("--samples", type=Path, default=None,
                   help="folder for the generated sample clips (default: user cache)")
    d.add_argument("--corrections", type=int, default=2,
                   help="correction rounds after the first scribbles (default 2)")
    i = sub.add_parser("info", help="describe a mask store")
    i.add_argument("store", type=Path)
    e = sub.add_parser("export", help="write a mask store's masks as PNG or TIFF files",
                       description="Write a mask store's masks, frame by frame: png = one palette PNG per "
                                   "frame (00000.png, ...: DAVIS layout), tif = one 16-bit TIFF per frame "
                                   "(mask000.tif, ...: Cell Tracking Challenge layout), tif-stack = one "
                                   "multi-page TIFF (masks.tif) that Fiji opens as a stack, ctc = a Cell "
                                   "Tracking Challenge result (mask000.tif, ... and the lineage table "
                                   "res_track.txt; tracks are cut where an object is missing or divides), "
                                   "csv = one table (objects.csv) of every object's area, centroid and box "
                                   "per frame.")
    e.add_argument("store", type=Path, help="the mask store (a .ivoma.zarr folder)")
    e.add_argument("folder", type=Path, help="where the files go (created when missing)")
    # (engine.export.EXPORT_FORMATS, spelt out: importing the engine here costs every command ~1 s)
    e.add_argument("--format", choices=["png", "tif", "tif-stack", "ctc", "csv"], default="png")
    e.add_argument("--start", type=int, default=None, help="first frame (default 0)")
    e.add_argument("--stop", type=int, default=None, help="frame after the last (default: all)")
    e.add_argument("--overwrite", action="store_true", help="replace files of the same names in the folder")
    args = ap.parse_args(argv)
    if args.cmd == "export":
        return _export(args)
    if args.cmd == "demo":
        clips = ["natural", "nuclei"] if args.clip == "all" else [args.clip]
        run_demo(args.out, clips, args.samples, args.corrections)
        return 0
    if args.cmd == "info":
        import json

        g, attrs = _open_store(args.store)
        if g is None:
            return 2
        refs = {t: r["kind"] for t, r in attrs["references"].items()}
        print(json.dumps({"labels": list(g["labels"].shape), "objects": attrs["objects"],
                          "references": refs, "undo_steps": len(attrs["undo"]),
                          "provenance": attrs["provenance"]}, indent=2))
        return 0
    return 1


def _open_store(path: Path):
    """A mask store's zarr group (read-only) and its ivoma attributes; (None, None), with a
    message, when ``path`` is not a mask store."""
    import zarr

    from .engine.store import ATTR_KEY, is_mask_store

    if not is_mask_store(path):
        print(f"{path} is not a napari-ivoma mask store", file=sys.stderr)
        return None, None
    g = zarr.open_group(str(path), mode="r")
    return g, dict(g.attrs[ATTR_KEY])


def _export(args: argparse.Namespace) -> int:
    from .engine.export import export_masks

    g, attrs = _open_store(args.store)
    if g is None:
        return 2
    max_id = max((int(k) for k in attrs["objects"]), default=0)
    try:
        paths = export_masks(g["labels"], args.folder, args.format, start=args.start, stop=args.stop,
                             max_id=max_id, overwrite=args.overwrite,
                             progress=_progress_bar(f"export {args.format}"), objects=attrs["objects"])
    except (ValueError, OSError) as exc:
        hint = " (--overwrite)" if isinstance(exc, FileExistsError) and args.folder.is_dir() else ""
        print(f"export failed: {exc}{hint}", file=sys.stderr)
        return 2
    print(f"{len(paths)} file(s) written to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
