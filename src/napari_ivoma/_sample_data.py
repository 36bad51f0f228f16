"""npe2 sample-data providers: the synthetic clips with a hidden ground-truth layer.

Both clips are generated in memory (deterministic, < 1 s each); see
``napari_ivoma.synthetic`` for what they contain.
"""

from __future__ import annotations

import numpy as np

from .synthetic import make_natural_clip, make_nuclei_clip

__all__ = ["natural_clip", "nuclei_clip"]

LayerData = tuple[np.ndarray, dict, str]


def _ground_truth(labels: np.ndarray, clip_name: str) -> LayerData:
    meta = {"name": f"{clip_name} ground truth", "visible": False, "opacity": 0.5}
    return labels, meta, "labels"


def natural_clip() -> list[LayerData]:
    """RGB clip (40 x 240 x 320) with three deforming objects, plus hidden ground truth."""
    frames, labels = make_natural_clip()
    name = "ivoma natural clip"
    return [(frames, {"name": name, "rgb": True}, "image"), _ground_truth(labels, name)]


def nuclei_clip() -> list[LayerData]:
    """16-bit nuclei time-lapse (40 x 256 x 256) with one division, plus hidden ground truth."""
    frames, labels = make_nuclei_clip()
    name = "ivoma nuclei clip"
    lo, hi = np.percentile(frames[0], [0.5, 99.9])
    meta = {"name": name, "colormap": "gray", "contrast_limits": (float(lo), float(hi))}
    return [(frames, meta, "image"), _ground_truth(labels, name)]
