"""The napari-free engine of napari-ivoma.

>>> from napari_ivoma.engine import Session, Scribble, open_frames
"""

from ._tree_kernels import warm_up as warm_up_kernels
from .io import FrameReadError, open_frames, to_float_image
from .scribbles import Scribble, control_points, rasterize_scribbles
from .session import Session
from .store import (
    MaskStore,
    StoreMismatchError,
    is_mask_store,
    read_store_labels,
    write_labels_store,
)

__all__ = [
    "Session",
    "Scribble",
    "open_frames",
    "to_float_image",
    "control_points",
    "rasterize_scribbles",
    "FrameReadError",
    "MaskStore",
    "StoreMismatchError",
    "is_mask_store",
    "read_store_labels",
    "write_labels_store",
    "warm_up_kernels",
]
