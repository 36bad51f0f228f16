"""npe2 reader: videos, image folders, TIFF stacks and zarr arrays as lazy Image layers;
napari-ivoma mask stores as Labels layers.

All decoding is done by :mod:`napari_ivoma.engine.io`; this module only decides what it can
open and wraps the result as napari layer data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .engine import is_mask_store, open_frames, read_store_labels
from .engine.io import (
    IMAGE_EXTENSIONS,
    TIFF_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FrameReadError,
    frames_have_channels,
)

__all__ = ["napari_get_reader", "read_frames", "read_mask_store", "SOURCE_KEY", "CHANNEL_KEY"]

#: key of the layer metadata holding the path the frames came from (used by the widget)
SOURCE_KEY = "ivoma_source"
#: key of the layer metadata holding the channel of a multi-channel stack the layer shows
CHANNEL_KEY = "ivoma_channel"

LayerData = tuple[Any, dict, str]
ReaderFunction = Callable[[str | list[str]], list[LayerData]]


def napari_get_reader(path: str | list[str]) -> ReaderFunction | None:
    """Return a reader for ``path``, or ``None`` when napari-ivoma does not handle it.

    Handled: video files, folders of images (one per frame), multi-page TIFF stacks, zarr
    arrays of shape (T, H, W[, C]) and napari-ivoma mask stores.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(os.fspath(path))
    if not p.exists():
        return None
    if p.is_dir():
        if is_mask_store(p):
            return read_mask_store
        if _is_zarr(p):
            return read_frames if _zarr_has_frames(p) else None
        return read_frames if _folder_has_images(p) else None
    suffix = p.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return read_frames
    if suffix in TIFF_EXTENSIONS:
        return read_frames if _is_tiff_stack(p) else None
    return None


def read_frames(path: str | list[str]) -> list[LayerData]:
    """Open frames lazily as one Image layer (dask array, one chunk per frame); a stack of
    fluorescence channels as one layer per channel (annotate the one that shows the objects)."""
    p = Path(os.fspath(path[0] if isinstance(path, (list, tuple)) else path))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        frames = open_frames(p)
    if said:  # (a video cut short: shown in the viewer, not only on a console)
        from napari.utils.notifications import show_warning

        for w in said:
            show_warning(str(w.message))
    name = p.name[: -len(p.suffix)] if p.suffix and not p.is_dir() else p.name
    if p.is_dir():  # (a zarr folder: its name without .zarr / .ome.zarr)
        name = name.removesuffix(".zarr").removesuffix(".ome") or name
    if frames_have_channels(p, frames):
        n = frames.shape[-1]
        first = np.asarray(frames[0])  # (read once: every channel's contrast comes from it)
        colours = ["magenta", "green"] if n == 2 else ["cyan", "magenta", "yellow", "blue", "green", "red"]
        return [
            (frames[..., c], {
                "name": f"{name} [channel {c}]",
                "rgb": False,
                "colormap": colours[c % len(colours)],
                "blending": "translucent_no_depth" if c == 0 else "additive",
                "contrast_limits": _limits(first[..., c]),
                "metadata": {SOURCE_KEY: str(p), CHANNEL_KEY: c},
            }, "image")
            for c in range(n)
        ]
    rgb = frames.ndim == 4 and frames.shape[-1] in (3, 4)
    meta: dict[str, Any] = {"name": name, "rgb": rgb, "metadata": {SOURCE_KEY: str(p)}}
    if rgb and np.dtype(frames.dtype) == np.uint8:
        meta["contrast_limits"] = (0, 255)
    else:  # (8-bit fluorescence often spans a tenth of 0-255: shown at full range it looks black)
        meta["contrast_limits"] = _first_frame_limits(frames)
    if not rgb:
        meta["colormap"] = "gray"
    return [(frames, meta, "image")]


def read_mask_store(path: str | list[str]) -> list[LayerData]:
    """Open a napari-ivoma mask store as a Labels layer backed by its zarr array (edits persist)."""
    p = Path(os.fspath(path[0] if isinstance(path, (list, tuple)) else path))
    labels = read_store_labels(p)
    name = p.name.removesuffix(".zarr").removesuffix(".ivoma")
    meta = {"name": f"{name} masks", "opacity": 0.5, "metadata": {"ivoma_store": str(p)}}
    return [(labels, meta, "labels")]


# --------------------------------------------------------------------------- checks
def _first_frame_limits(frames) -> tuple[float, float]:
    """Contrast limits from frame 0 only (never scans the whole lazy video)."""
    return _limits(np.asarray(frames[0]))


def _limits(image: np.ndarray) -> tuple[float, float]:
    """Contrast limits of one frame: its 0.5 and 99.9 percentiles."""
    lo, hi = np.percentile(image, [0.5, 99.9]) if image.size else (0.0, 1.0)
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def _is_zarr(p: Path) -> bool:
    return (
        p.suffix.lower() == ".zarr"
        or (p / "zarr.json").exists()
        or (p / ".zarray").exists()
        or (p / ".zgroup").exists()
    )


def _zarr_has_frames(p: Path) -> bool:
    """True for a zarr array (or group holding one) of 3 or 4 dimensions, or an OME-Zarr image."""
    import zarr

    from .engine.io import ome_zarr_image

    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:  # noqa: BLE001 - a .zarr folder we cannot open is corrupt
        if p.suffix.lower() == ".zarr":
            raise FrameReadError(f"cannot open zarr store {p}: {exc}") from exc
        return False
    if isinstance(node, zarr.Array):
        return node.ndim in (3, 4)
    try:
        if ome_zarr_image(node) is not None:
            return True
    except FrameReadError:
        return True  # (ours to open: reading it says what is wrong)
    return any(a.ndim in (3, 4) for _, a in node.arrays())


def _folder_has_images(p: Path) -> bool:
    return any(
        f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") for f in p.iterdir()
    )


def _is_tiff_stack(p: Path) -> bool:
    """True for a TIFF with several pages (or a 3D+ series); single 2D images are left to napari."""
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            n_pages = len(series.pages)
            shape, axes = series.shape, series.axes
    except Exception:  # noqa: BLE001 - claimed by extension: report the problem when reading
        return True
    if n_pages > 1:
        return True
    spatial = len(shape) - (1 if axes and axes[-1] in "SC" else 0)
    return spatial >= 3
