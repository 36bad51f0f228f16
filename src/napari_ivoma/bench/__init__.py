"""Interactive benchmark of napari-ivoma: a simulated annotator drives the engine's Session.

Run it with the ``ivoma-bench`` console script (see :mod:`napari_ivoma.bench.cli`).
"""

from .dataset import Sequence, SkipSequence, find_sequences, load_sequence
from .metrics import boundary_f, region_j, seg_score, sequence_scores
from .protocol import run_sequence

__all__ = [
    "Sequence",
    "SkipSequence",
    "find_sequences",
    "load_sequence",
    "boundary_f",
    "region_j",
    "seg_score",
    "sequence_scores",
    "run_sequence",
]
