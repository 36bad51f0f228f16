"""``ivoma-bench``: run the simulated-annotator protocol on sequence folders and write a report.

Examples
--------
::

    ivoma-bench ../shared/data                 # every sequence below the folder
    ivoma-bench ../shared/data/davis --seq bear dog --rounds 5 --max-frames 30
    ivoma-bench --sample --out bench_out/sample   # the shipped synthetic clips
    ivoma-bench DATA --param sigma=2.0 --backend torch
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .dataset import SkipSequence, find_sequences, load_sequence
from .protocol import ANNOTATOR_MODES, DEFAULT_ROUNDS, default_session_factory, run_sequence
from .report import markdown_table, write_report

__all__ = ["main", "build_parser", "parse_params"]


def parse_params(items: list[str] | None) -> dict:
    """``["a=1", "b=x", "c=true"]`` -> ``{"a": 1, "b": "x", "c": True}`` (values parsed as JSON when possible)."""
    params: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {item!r}")
        raw = raw.strip()
        lowered = raw.lower()
        if lowered in ("true", "false"):
            value: object = lowered == "true"
        elif lowered in ("none", "null"):
            value = None
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        params[key] = value
    return params


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ivoma-bench",
        description=(
            "Interactive benchmark: a simulated annotator scribbles (round 1: every object; "
            "rounds 2..R: corrections on the worst frame), the engine segments and propagates, "
            "and J/F/J&F (and CTC SEG for instance labels) are scored per round."
        ),
    )
    p.add_argument(
        "path", nargs="?", type=Path,
        help="a sequence folder (frames/ + masks/) or a folder of them",
    )
    p.add_argument("--sample", action="store_true", help="run on the shipped synthetic sample clips")
    p.add_argument("--seq", nargs="+", metavar="NAME", help="only these sequences (folder names)")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interaction rounds R (default 8)")
    p.add_argument(
        "--annotator", choices=ANNOTATOR_MODES, default="largest",
        help="corrective strokes: one per label in its largest error region (default, the "
             "benchmark's), or one in every error region that survives an opening (DAVIS's robot)",
    )
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    p.add_argument(
        "--param", action="append", metavar="KEY=VALUE",
        help="engine parameter passed as Session(..., params={KEY: VALUE}); repeatable",
    )
    p.add_argument("--backend", default=None, help="engine backend, passed as Session(..., backend=NAME)")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default bench_out/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _collect(args: argparse.Namespace) -> list[tuple[str, Path]]:
    folders: list[tuple[str, Path]] = []
    if args.sample:
        from napari_ivoma.synthetic import ensure_sample_clips

        folders += [(name, Path(folder)) for name, folder in ensure_sample_clips().items()]
    if args.path is not None:
        folders += [(f.name, f) for f in find_sequences(args.path)]
    if args.seq:
        wanted = set(args.seq)
        unknown = wanted - {name for name, _ in folders}
        if unknown:
            raise ValueError(
                f"unknown sequence(s) {sorted(unknown)}; available: {sorted(n for n, _ in folders)}"
            )
        folders = [(n, f) for n, f in folders if n in wanted]
    return folders


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ivoma-bench``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.path is None and not args.sample:
        parser.error("give a PATH (sequence folder or folder of them) or --sample")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.max_frames is not None and args.max_frames < 2:
        parser.error("--max-frames must be >= 2")
    try:
        params = parse_params(args.param)
        folders = _collect(args)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    factory = default_session_factory(params or None, args.backend)
    # timings as on a machine that has run the tool before: compiled kernels are loaded (or
    # compiled, the first time) before the clock starts
    from napari_ivoma.engine import warm_up_kernels

    warm_up_kernels(wait=True)

    from tqdm import tqdm

    bar = tqdm(
        total=len(folders) * args.rounds, file=sys.stderr, unit="round",
        disable=args.no_progress, dynamic_ncols=True,
    )
    results: list[dict] = []
    skipped: dict[str, str] = {}
    for name, folder in folders:
        bar.set_description(name)
        try:
            seq = load_sequence(folder, max_frames=args.max_frames)
        except SkipSequence as exc:
            skipped[name] = str(exc)
            tqdm.write(f"skipping {exc}", file=sys.stderr)
            bar.update(args.rounds)
            continue

        def on_round(rec: dict) -> None:
            bar.set_postfix(round=rec["round"], JF=f"{rec['JF']:.3f}")
            bar.update(1)

        results.append(run_sequence(seq, args.rounds, factory, on_round=on_round, annotator_mode=args.annotator))
    bar.close()
    config = {
        "path": str(args.path) if args.path else None,
        "sample": args.sample,
        "sequences": [n for n, _ in folders],
        "rounds": args.rounds,
        "annotator": args.annotator,
        "max_frames": args.max_frames,
        "params": params,
        "backend": args.backend,
    }
    if not results:
        print("no sequence could be benchmarked:", file=sys.stderr)
        for name, why in skipped.items():
            print(f"  {name}: {why}", file=sys.stderr)
        return 1
    paths = write_report(results, args.out, args.rounds, config=config, skipped=skipped)
    print(markdown_table(results, args.rounds))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
