"""Export a mask video as files other tools read, one frame at a time.

The layouts:

``png``
    One PNG per frame, ``00000.png``, ``00001.png``, ... (the DAVIS layout): a palette PNG
    whose pixel values are the object ids when every id fits in 8 bits (the DAVIS palette:
    object 1 dark red, 2 green, ...), a 16-bit grey PNG otherwise.
``tif``
    One TIFF per frame, ``mask000.tif``, ``mask001.tif``, ... (the Cell Tracking Challenge
    result layout): 16-bit ids, 32-bit when an id is above 65535.
``tif-stack``
    One multi-page TIFF ``masks.tif`` holding every frame (T, Y, X): Fiji / ImageJ open it as
    a stack (16-bit ids; a 32-bit stack, which ImageJ cannot read, when an id is above 65535).
``ctc``
    A Cell Tracking Challenge result: ``mask000.tif``, ... and the lineage table
    ``res_track.txt`` (one line ``L B E P`` per track: label, first and last frame, parent
    label or 0).  The CTC wants every track present on each frame from B to E and a parent
    ended before its daughters begin, so an object missing for some frames, or going on as one
    daughter after it divided, is cut there: the later piece gets a new label whose parent is
    the piece before (the object's own id stays on its first piece).  The table is written
    last: a cancelled export leaves frames without it.

TIFFs are deflate-compressed (what Fiji calls ZIP; a 480p mask takes ~3 KiB instead of
800).  Frames are read and written one at a time, so a 10,000-frame video needs the memory of one
frame.  Files already in the target folder are never replaced unless asked, and every file is
written under a temporary name and renamed once complete, so an interrupted export leaves
whole files only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXPORT_FORMATS", "export_masks", "export_paths", "davis_palette", "ctc_tracks", "object_measurements"]

#: the layouts :func:`export_masks` writes
EXPORT_FORMATS = ("png", "tif", "tif-stack", "ctc", "csv")

#: the lineage table of a ``ctc`` export
CTC_TRACKS = "res_track.txt"
#: the table of a ``csv`` export
CSV_TABLE = "objects.csv"
CSV_COLUMNS = ("frame", "object_id", "name", "parent", "area", "centroid_row", "centroid_col",
               "bbox_row_start", "bbox_col_start", "bbox_row_stop", "bbox_col_stop")

_PART = ".part"
_TIFF_COMPRESSION = "zlib"


class _Cancelled(Exception):
    pass


@functools.cache
def _palette_list() -> list[int]:
    return davis_palette().ravel().tolist()


def davis_palette() -> np.ndarray:
    """The (256, 3) uint8 colour map of DAVIS / PASCAL VOC palette masks (index 0 black).

    Bit ``k`` of an index's three lowest-bit groups lights bit ``7 - k`` of red, green, blue.
    """
    idx = np.arange(256)
    pal = np.zeros((256, 3), np.int64)
    for k in range(8):
        for ch in range(3):
            pal[:, ch] |= ((idx >> (3 * k + ch)) & 1) << (7 - k)
    return pal.astype(np.uint8)


def export_paths(folder: str | os.PathLike, fmt: str, n_frames: int,
                 frames: range | None = None) -> list[Path]:
    """The files :func:`export_masks` writes for these frames (one for ``tif-stack``)."""
    folder = Path(folder)
    _check_format(fmt)
    if fmt == "tif-stack":
        return [folder / "masks.tif"]
    if fmt == "csv":
        return [folder / CSV_TABLE]
    frames = range(n_frames) if frames is None else frames
    digits = max(5 if fmt == "png" else 3, len(str(max(n_frames - 1, 0))))
    if fmt == "png":
        return [folder / f"{t:0{digits}d}.png" for t in frames]
    masks = [folder / f"mask{t:0{digits}d}.tif" for t in frames]
    return masks + [folder / CTC_TRACKS] if fmt == "ctc" else masks


def export_masks(labels: Any, folder: str | os.PathLike, fmt: str = "png", *,
                 start: int | None = None, stop: int | None = None, max_id: int | None = None,
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | threading.Event | None = None,
                 objects: dict[int, dict] | None = None) -> list[Path]:
    """Write the masks of frames ``[start, stop)`` into ``folder`` (see the module's layouts).

    Parameters
    ----------
    labels : (T, H, W) integer array-like
        The masks (a session's ``labels``, a store's zarr array, a numpy array); read one
        frame at a time.
    folder : path
        Created when missing.
    fmt : {"png", "tif", "tif-stack", "ctc", "csv"}
    start, stop : int, optional
        Frame range (default: every frame).  File names keep the frame's index.
    max_id : int, optional
        The largest object id in ``labels`` (it chooses the pixel type of every file alike);
        found by reading every frame once more when not given.
    overwrite : bool
        Replace files of the same names already in ``folder``.  Without it, such files are an
        error and nothing is written.
    progress : callable(done, total), optional
    cancel : callable returning bool, or threading.Event, optional
        Stops after the current frame: the frames written so far stay (``png`` / ``tif`` /
        ``ctc``, without its table); an unfinished ``tif-stack`` or ``csv`` is removed.
    objects : dict, optional
        The session's object table, id -> {"name": ..., "parent": the id it divided from or
        None, ...}: ``ctc`` takes the daughters' parents from it, ``csv`` names and parents.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ValueError
        Unknown format, labels not (T, H, W) integers, negative ids, an id too large for the
        format (16-bit PNG: 65535), an empty frame range.
    FileExistsError
        ``folder`` holds files of the same names and ``overwrite`` is false, or is a file.
    PermissionError
        ``folder`` cannot be written.
    """
    _check_format(fmt)
    shape = tuple(getattr(labels, "shape", ()))
    dtype = np.dtype(getattr(labels, "dtype", np.float64))
    if len(shape) != 3:
        raise ValueError(f"masks must be a (T, H, W) array, got shape {shape}")
    if not (np.issubdtype(dtype, np.integer) or dtype.kind == "b"):
        raise ValueError(f"masks must hold integer object ids, got dtype {dtype}")
    n = shape[0]
    start = 0 if start is None else max(0, int(start))
    stop = n if stop is None else min(n, int(stop))
    if start >= stop:
        raise ValueError(f"no frames to export: start={start}, stop={stop} of {n} frames")
    frames = range(start, stop)
    is_cancelled = _cancel_check(cancel)
    folder = Path(folder)
    paths = export_paths(folder, fmt, n, frames)
    if fmt == "csv":
        _prepare_folder(folder, paths, overwrite)
        return _write_table(paths[0], labels, frames, objects or {}, progress, is_cancelled)
    renames: dict[int, dict[int, int]] = {}
    if fmt == "ctc":  # (frames read once before anything is written: their ids, checked)
        present = _ids_per_frame(labels, frames, is_cancelled, progress)
        if is_cancelled():
            return []
        from .store import object_lineage

        tracks, renames = ctc_tracks(present, object_lineage(objects or {}))
        max_id = max((row[0] for row in tracks), default=0)
    elif max_id is None:
        max_id = _largest_id(labels, frames, is_cancelled)
    out_type = _pixel_type(fmt, int(max_id))
    _prepare_folder(folder, paths, overwrite)
    if renames:
        from .store import relabel

    def frame(t: int) -> np.ndarray:
        m = np.asarray(labels[t])
        if t in renames:
            m = relabel(m, renames[t])
        if m.size and (m.min() < 0 or m.max() > np.iinfo(out_type).max):
            raise ValueError(f"frame {t} holds object id {int(m.min() if m.min() < 0 else m.max())}, "
                             f"outside what the {fmt} export of this video stores (0..{np.iinfo(out_type).max})")
        return m.astype(out_type, copy=False)

    total = len(frames)
    if fmt == "ctc" and progress is not None:  # (the frames were read once already: half the work)
        report = progress

        def progress(done: int, _total: int) -> None:
            report(total + done, 2 * total)

    if fmt == "tif-stack":
        return _write_stack(paths[0], frame, frames, shape[1:], out_type, progress, is_cancelled)
    written = []
    for k, (t, path) in enumerate(zip(frames, paths)):
        if is_cancelled():
            return written
        _write_atomically(path, frame(t), fmt)
        written.append(path)
        if progress is not None:
            progress(k + 1, total)
    if fmt == "ctc":
        with _atomic(paths[-1]) as part:
            part.write_text("".join(f"{label} {b} {e} {parent}\n" for label, b, e, parent in tracks))
        written.append(paths[-1])
    return written


def ctc_tracks(present: dict[int, list[int]], parents: dict[int, int]
               ) -> tuple[list[tuple[int, int, int, int]], dict[int, dict[int, int]]]:
    """Cell Tracking Challenge tracks of objects seen on frames ``present[id]``.

    Parameters
    ----------
    present : dict
        Object id -> the frames it is on (sorted or not).
    parents : dict
        Object id -> the id it divided from (ids absent from ``present`` are ignored).

    Returns
    -------
    tracks : list of (label, begin, end, parent)
        One per unbroken piece of an object's presence, sorted by label: an object is cut where
        it is missing for a frame or more and where a daughter of it begins (the CTC wants a
        parent ended before its daughters begin).  Its first piece keeps its id; every later
        piece gets a new label (above every id) whose parent is the piece before.  A daughter's
        parent is the parent's last piece ended before the daughter begins (0 when none).
    renames : dict
        Frame -> {object id: label} for the frames of the later pieces.
    """
    frames_of = {int(k): np.unique(np.asarray(v, dtype=np.int64)) for k, v in present.items() if k != 0 and len(v)}
    births = {k: int(f[0]) for k, f in frames_of.items()}
    cuts: dict[int, set[int]] = {}
    for child, parent in parents.items():
        child, parent = int(child), int(parent or 0)
        if child in frames_of and parent in frames_of and parent != child:
            cuts.setdefault(parent, set()).add(births[child])
    next_label = max(frames_of, default=0) + 1
    pieces: dict[int, list[list[int]]] = {}  # id -> [[begin, end, label], ...]
    for k in sorted(frames_of):
        f = frames_of[k]
        gaps = np.flatnonzero(np.diff(f) > 1)
        runs = list(zip([int(f[0])] + f[gaps + 1].tolist(), f[gaps].tolist() + [int(f[-1])]))
        for b in sorted(cuts.get(k, ())):
            runs = [part for s, e in runs
                    for part in (((s, b - 1), (b, e)) if s < b <= e else ((s, e),))]
        pieces[k] = []
        for i, (s, e) in enumerate(runs):
            pieces[k].append([s, e, k if i == 0 else next_label])
            next_label += i > 0
    tracks, renames = [], {}
    for k, runs in pieces.items():
        p = int(parents.get(k) or 0)
        before = [r for r in pieces.get(p, []) if r[1] < births[k]] if p != k else []
        parent_label = before[-1][2] if before else 0
        for s, e, label in runs:
            tracks.append((label, s, e, parent_label))
            parent_label = label
            if label != k:
                for t in range(s, e + 1):
                    renames.setdefault(t, {})[k] = label
    return sorted(tracks), renames


def object_measurements(labels: np.ndarray) -> list[tuple[int, int, float, float, int, int, int, int]]:
    """Per object of one (H, W) label image: (id, area, centroid row, centroid col, bounding
    box row start, col start, row stop, col stop), sorted by id; pixel units."""
    from scipy import ndimage as ndi

    from .store import label_ids

    m = np.asarray(labels)
    ids = [k for k in label_ids(m) if k]
    if not ids:
        return []
    # ids 1..n in a compact image (ids go up to 2**31 - 1); then each object within its box
    dense = np.searchsorted(np.asarray([0] + ids), m).astype(np.int32)
    out = []
    for j, (k, box) in enumerate(zip(ids, ndi.find_objects(dense)), start=1):
        rows, cols = np.nonzero(dense[box] == j)
        out.append((int(k), len(rows), box[0].start + float(rows.mean()), box[1].start + float(cols.mean()),
                    box[0].start, box[1].start, box[0].stop, box[1].stop))
    return out


def _write_table(path: Path, labels: Any, frames: range, objects: dict[int, dict], progress,
                 is_cancelled: Callable[[], bool]) -> list[Path]:
    import csv

    try:
        with _atomic(path) as part, open(part, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(CSV_COLUMNS)
            for k, t in enumerate(frames):
                if is_cancelled():
                    raise _Cancelled
                m = _read_ids(labels, t)
                for oid, area, cy, cx, r0, c0, r1, c1 in object_measurements(m):
                    obj = objects.get(oid) or objects.get(str(oid)) or {}  # (a store's keys are str)
                    parent = obj.get("parent")
                    out.writerow((t, oid, obj.get("name", ""), "" if parent is None else int(parent), area,
                                  f"{cy:.2f}", f"{cx:.2f}", r0, c0, r1, c1))
                if progress is not None:
                    progress(k + 1, len(frames))
    except _Cancelled:
        return []
    return [path]


def _ids_per_frame(labels: Any, frames: range, is_cancelled: Callable[[], bool],
                   progress: Callable[[int, int], None] | None) -> dict[int, list[int]]:
    """Object id -> the frames (of ``frames``) it is on, reading one frame at a time (the first
    half of the progress)."""
    from .store import label_ids

    present: dict[int, list[int]] = {}
    for k, t in enumerate(frames):
        if is_cancelled():
            break
        m = _read_ids(labels, t)
        for i in label_ids(m):
            if i:
                present.setdefault(int(i), []).append(t)
        if progress is not None:
            progress(k + 1, 2 * len(frames))
    return present


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")


def _cancel_check(cancel) -> Callable[[], bool]:
    from .session import _cancel_check as check

    return check(cancel)


def _largest_id(labels: Any, frames: range, is_cancelled: Callable[[], bool]) -> int:
    top = 0
    for t in frames:
        if is_cancelled():
            break
        m = _read_ids(labels, t)
        if m.size:
            top = max(top, int(m.max()))
    return top


def _read_ids(labels: Any, t: int) -> np.ndarray:
    """Frame ``t`` of ``labels``, refused when it holds a negative object id."""
    m = np.asarray(labels[t])
    if m.size and m.min() < 0:
        raise ValueError(f"frame {t} holds a negative object id ({int(m.min())})")
    return m


def _pixel_type(fmt: str, max_id: int) -> type:
    if max_id < 0:
        raise ValueError(f"object ids must be >= 0, got {max_id}")
    if fmt == "png":
        if max_id > 65535:
            raise ValueError(f"object id {max_id} does not fit a 16-bit PNG: export as tif or tif-stack")
        return np.uint8 if max_id <= 255 else np.uint16
    return np.uint16 if max_id <= 65535 else np.uint32


def _prepare_folder(folder: Path, paths: list[Path], overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"cannot export into {folder}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create the export folder {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot export into {folder}: the folder is not writable")
    if not overwrite:
        present = [p for p in paths if p.exists()]
        if present:
            more = f" and {len(present) - 1} more" if len(present) > 1 else ""
            raise FileExistsError(f"{folder} already holds {present[0].name}{more}: choose another folder, "
                                  "or allow overwriting")


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary name to write ``path`` under; renamed to ``path`` once the block ends
    without error, removed otherwise."""
    part = path.with_name(path.name + _PART)
    try:
        yield part
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _write_atomically(path: Path, mask: np.ndarray, fmt: str) -> None:
    with _atomic(path) as part:
        if fmt == "png":
            _write_png(part, mask)
        else:
            import tifffile

            tifffile.imwrite(part, mask, compression=_TIFF_COMPRESSION)


def _write_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    if mask.dtype == np.uint8:
        im = Image.fromarray(mask, mode="P")
        im.putpalette(_palette_list())
    else:
        im = Image.fromarray(mask.astype(np.uint16))
    im.save(path, format="PNG")


def _write_stack(path: Path, frame: Callable[[int], np.ndarray], frames: range, size: tuple,
                 out_type: type, progress, is_cancelled: Callable[[], bool]) -> list[Path]:
    import tifffile

    total = len(frames)

    def pages() -> Iterator[np.ndarray]:
        for k, t in enumerate(frames):
            if is_cancelled():
                raise _Cancelled
            yield frame(t)
            if progress is not None:
                progress(k + 1, total)

    imagej = out_type != np.uint32  # ImageJ reads 8/16-bit and float stacks only
    big = not imagej and total * int(np.prod(size)) * np.dtype(out_type).itemsize > 2**32 - 2**25
    try:
        with _atomic(path) as part:
            tifffile.imwrite(part, pages(), shape=(total, *size), dtype=out_type, imagej=imagej,
                             bigtiff=big, metadata={"axes": "TYX"}, compression=_TIFF_COMPRESSION)
    except _Cancelled:
        return []
    return [path]
