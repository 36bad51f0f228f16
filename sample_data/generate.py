"""Write the synthetic sample clips to disk.

Usage::

    python sample_data/generate.py [--out sample_data/clips] [--force]

Creates ``<out>/natural`` and ``<out>/nuclei``, each with ``frames/00000.png ...``,
``masks/00000.png ...`` and a version stamp (``nuclei`` also has ``man_track.txt``).
Current copies are reused unless ``--force`` is given.  See ``sample_data/README.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _import_synthetic():
    try:
        from napari_ivoma import synthetic
    except ImportError:  # running from a source checkout without installing
        sys.path.insert(0, str(HERE.parent / "src"))
        from napari_ivoma import synthetic
    return synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the napari-ivoma synthetic sample clips.")
    parser.add_argument("--out", type=Path, default=HERE / "clips",
                        help="output folder (default: sample_data/clips next to this script)")
    parser.add_argument("--force", action="store_true", help="regenerate even if current")
    args = parser.parse_args(argv)
    synthetic = _import_synthetic()
    start = time.perf_counter()
    folders = synthetic.ensure_sample_clips(args.out, force=args.force)
    for name, folder in folders.items():
        n = len(list((folder / "frames").glob("*.png")))
        print(f"{name:8s} {n:3d} frames  {folder}")
    print(f"done in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
