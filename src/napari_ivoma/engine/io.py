"""Lazy frame I/O: videos, image folders, TIFF stacks and zarr arrays as dask arrays.

Every reader returns a dask array of shape (T, H, W) or (T, H, W, C) with one chunk
per frame; nothing is decoded until a frame is asked for.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import dask.array as da
import numpy as np

__all__ = [
    "open_frames",
    "frames_have_channels",
    "read_image",
    "to_float_image",
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "TIFF_EXTENSIONS",
    "FrameReadError",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIFF_EXTENSIONS = (".tif", ".tiff")


class FrameReadError(ValueError):
    """A video or image stack cannot be read."""


# --------------------------------------------------------------------------- helpers
def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def read_image(path: str | Path) -> np.ndarray:
    """Decode one image file to a numpy array: grey (H, W) or colour (H, W, C), dtype kept.

    Palette, CMYK, YCbCr, Lab, HSV and 1-bit images become RGB (RGBA with transparency); grey with
    alpha becomes grey (the alpha of a microscopy frame carries no signal).  TIFF pages are
    returned as stored.

    Raises
    ------
    FrameReadError
        When the file cannot be decoded.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_EXTENSIONS:
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                if im.mode == "LA":
                    im = im.convert("L")
                elif im.mode in ("P", "PA", "CMYK", "YCbCr", "1", "LAB", "HSV"):
                    im = im.convert("RGBA" if im.mode == "PA" else "RGB")
                arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - report any decoder failure the same way
        raise FrameReadError(f"cannot read image {path}: {exc}") from exc
    return arr


def _stack_lazy(read: Callable[[int], np.ndarray], n: int, first: np.ndarray) -> da.Array:
    """Dask array of ``n`` frames of the shape/dtype of ``first``, one chunk per frame."""
    shape, dtype = first.shape, first.dtype

    def load(i: int) -> np.ndarray:
        frame = first if i == 0 else read(i)
        if frame.shape != shape:
            raise FrameReadError(
                f"frame {i} has shape {frame.shape} but frame 0 has {shape}: all frames must match"
            )
        return frame.astype(dtype, copy=False)

    blocks = [da.from_delayed(_delayed(load, i), shape=shape, dtype=dtype) for i in range(n)]
    return da.stack(blocks, axis=0)


def _delayed(fn: Callable, *args):
    from dask import delayed

    return delayed(fn, pure=True)(*args)


# --------------------------------------------------------------------------- sources
def _open_image_folder(folder: Path) -> da.Array:
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
        key=_natural_key,
    )
    if not files:
        raise FrameReadError(
            f"folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "expected one image file per frame"
        )
    first = read_image(files[0])
    # check shapes from headers only (cheap), so mixed shapes fail at open time
    bad = _mismatched_sizes(files, first.shape[:2])
    if bad:
        name, size = bad
        raise FrameReadError(
            f"frames in {folder} have mixed shapes: {files[0].name} is {first.shape[1]}x{first.shape[0]} "
            f"(W x H) but {name} is {size[0]}x{size[1]}; all frames must have the same size"
        )
    return _stack_lazy(lambda i: read_image(files[i]), len(files), first)


def _mismatched_sizes(files: list[Path], hw: tuple[int, int]) -> tuple[str, tuple[int, int]] | None:
    from PIL import Image

    for p in files[1:]:
        try:
            with Image.open(p) as im:
                size = im.size
        except Exception as exc:  # noqa: BLE001
            raise FrameReadError(f"cannot read image {p}: {exc}") from exc
        if (size[1], size[0]) != tuple(hw):
            return p.name, size
    return None


def _open_tiff(path: Path) -> da.Array:
    """A TIFF stack, read one frame at a time.

    The series' axes say what its pages are: time (``T``) is the frame axis, channels (``C``)
    become the last axis of each frame (an ImageJ / OME hyperstack ``TCYX`` gives (T, H, W, C),
    not 2T frames of alternating channels); a stack with one page axis other than channels
    (``Z``, ``I``, ...) is read as frames along it.  A stack with a further axis besides time (a
    z-stack per time point) is refused with a clear message.  Without axes: one page per frame;
    a single page is one frame.
    """
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        pages = series.pages
        first = pages[0].asarray()
        axes, shape = str(series.axes), tuple(series.shape)
    except Exception as exc:  # noqa: BLE001
        raise FrameReadError(f"cannot read TIFF {path}: {exc}") from exc
    lock = threading.Lock()

    def read(i: int) -> np.ndarray:
        with lock:
            try:
                return pages[i].asarray()
            except Exception as exc:  # noqa: BLE001
                raise FrameReadError(f"cannot read page {i} of TIFF {path}: {exc}") from exc

    layout = _hyperstack_layout(path, axes, shape, first, len(pages))
    if layout is not None:
        return _stack_lazy(*layout(read))
    if first.ndim == 3 and first.shape[-1] not in (1, 2, 3, 4) and len(pages) == 1:
        # a whole (T, H, W) stack stored as one page
        return da.from_array(first, chunks=(1,) + first.shape[1:])
    return _stack_lazy(read, len(pages), first)


def _hyperstack_layout(path: Path, axes: str, shape: tuple[int, ...], first: np.ndarray, n_pages: int):
    """How to read frames from a TIFF series whose pages carry channels or a further axis.

    Returns None when each page is one frame (the plain case), else a function of the page
    reader giving ``(read_frame, n_frames, frame_0)`` for :func:`_stack_lazy`.
    """
    if "Y" not in axes or len(axes) != len(shape) or first.ndim != len(axes) - axes.index("Y"):
        return None  # pages are not 2D images under page axes: the plain reading
    lead = axes[: axes.index("Y")]
    sizes = dict(zip(lead, shape[: len(lead)]))
    expected = int(np.prod(list(sizes.values()), dtype=np.int64))
    if expected != n_pages:
        if sizes.get("C", 1) > 1:  # (read page by page, its channels would pass for frames)
            raise FrameReadError(f"{path.name} has {n_pages} pages where its axes {axes} (shape {shape}) "
                                 f"say {expected}: the file is truncated or its metadata wrong")
        return None
    n_channels = sizes.get("C", 1)
    if n_channels > 1 and first.ndim == 3:
        raise FrameReadError(
            f"{path.name} has {n_channels} channels of {first.shape[-1]} colour samples each "
            f"(axes {axes}, shape {shape}); napari-ivoma reads either channels or colour: save one "
            f"channel (Fiji: Image > Color > Split Channels)"
        )
    frame_axis = _frame_axis(path, axes, shape, lead)
    if n_channels == 1:
        return None  # one page per frame
    dims = [sizes[a] for a in lead]

    def page_of(t: int, c: int) -> int:
        index = [t if a == frame_axis else c if a == "C" else 0 for a in lead]
        return int(np.ravel_multi_index(index, dims))

    n_frames = sizes[frame_axis] if frame_axis else 1

    def layout(read_page: Callable[[int], np.ndarray]):
        def read_frame(t: int) -> np.ndarray:
            return np.stack([read_page(page_of(t, c)) for c in range(n_channels)], axis=-1)

        return read_frame, n_frames, read_frame(0)

    return layout


def _frame_axis(path: Path, axes: str, shape: tuple[int, ...], candidates: str) -> str | None:
    """The axis (of ``candidates``, named in ``axes``) the frames run along: ``T``, else the one
    other axis longer than 1 that is not channels or Y / X (None: a single frame).  A further
    axis longer than 1 (a z-stack per time point) is refused with what to do."""
    sizes = dict(zip(axes, shape))
    others = [a for a in candidates if a not in "TCYX" and sizes[a] > 1]
    frame_axis = "T" if "T" in candidates else (others[0] if others else None)
    extra = [a for a in others if a != frame_axis]
    if extra:
        names = {"Z": "a z-stack", "T": "time points"}
        what = ", ".join(f"{a} ({sizes[a]}: {names.get(a, 'another axis')})" for a in extra)
        over = f" besides the frame axis {frame_axis}" if frame_axis else ""
        raise FrameReadError(
            f"{path.name} has axes {axes} (shape {shape}): {what}{over}. napari-ivoma annotates 2D "
            f"frames over one axis: save one plane or a projection per frame first (Fiji: Image > "
            f"Stacks > Z Project)"
        )
    return frame_axis


def _open_video(path: Path) -> da.Array:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FrameReadError(
            f"cannot open video {path}: not a video file, an unsupported codec, or a recording cut "
            f"short (an MP4 / MOV written until the camera stopped lacks the index it keeps at its end)"
        )
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    if not ok or first is None or n <= 0:
        cap.release()
        raise FrameReadError(f"cannot decode video {path}: the file is empty or corrupt")
    decodable = _decodable_frames(cap, n)
    cap.release()
    if decodable < n:
        warnings.warn(
            f"{path.name}: its header counts {n} frames but only the first {decodable} decode (a "
            f"recording cut short?); opening those {decodable}",
            stacklevel=3,
        )
    reader = _VideoReader(path)
    first = first[..., ::-1].copy()  # BGR -> RGB
    return _stack_lazy(reader.read, decodable, first)


def _decodable_frames(cap, n: int) -> int:
    """How many of the ``n`` frames a video's header counts decode: ``n`` when the last one does
    (one seek), else the first frame that does not, found by halving (frame 0 decodes)."""
    import cv2

    def decodes(i: int) -> bool:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        return bool(ok) and frame is not None

    if decodes(n - 1):
        return n
    lo, hi = 0, n - 1  # frame lo decodes, frame hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if decodes(mid) else (lo, mid)
    return lo + 1


class _VideoReader:
    """Random access to video frames with one persistent decoder (sequential reads are cheap)."""

    def __init__(self, path: Path):
        self.path = path
        self._cap = None
        self._next = 0
        self._lock = threading.Lock()
        self.decoded = 0  # number of frames decoded (for tests: lazy loading)

    def read(self, i: int) -> np.ndarray:
        import cv2

        with self._lock:
            if self._cap is None:
                self._cap = cv2.VideoCapture(str(self.path))
                self._next = 0
            if i != self._next:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, frame = self._cap.read()
            self.decoded += 1
            if not ok:
                raise FrameReadError(f"cannot decode frame {i} of {self.path}: the video is truncated or corrupt")
            self._next = i + 1
            return frame[..., ::-1].copy()


def _open_zarr(path: Path) -> da.Array:
    """A zarr array (T, H, W[, C]), a group holding one, or an OME-Zarr image (its full
    resolution, read by its axes: ``t`` frames, ``c`` channels last)."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001
        raise FrameReadError(f"cannot open zarr store {path}: {exc}") from exc
    if isinstance(node, zarr.Group):
        ome = ome_zarr_image(node)
        if ome is not None:
            arr, axes = ome
            frames = da.from_zarr(arr)
            return _frames_by_axes(frames, axes, path)
        arrays = [a for _, a in node.arrays()]
        for name in ("frames", "image", "data", "0"):
            if name in node and isinstance(node[name], zarr.Array):
                arrays = [node[name]]
                break
        if not arrays:
            raise FrameReadError(f"zarr group {path} holds no array")
        arr = arrays[0]
    else:
        arr = node
    if arr.ndim not in (3, 4):
        raise FrameReadError(f"zarr array {path} has shape {arr.shape}; expected (T, H, W) or (T, H, W, C)")
    return da.from_zarr(arr, chunks=(1,) + tuple(arr.shape[1:]))


def ome_zarr_image(group) -> tuple | None:
    """(full-resolution array, axis names in upper case) of an OME-Zarr image group (NGFF 0.4
    or 0.5), or None when ``group`` is not one."""
    attrs = dict(group.attrs)
    meta = attrs.get("ome", attrs)  # (0.5 keeps it under "ome")
    scales = meta.get("multiscales") if isinstance(meta, dict) else None
    if not scales:
        return None
    try:
        first = scales[0]
        axes = "".join(str(a["name"] if isinstance(a, dict) else a)[0].upper() for a in first["axes"])
        arr = group[first["datasets"][0]["path"]]
    except (KeyError, IndexError, TypeError) as exc:
        raise FrameReadError(f"OME-Zarr image {group.store} has unreadable multiscales metadata: {exc}") from exc
    if len(axes) != arr.ndim:
        raise FrameReadError(f"OME-Zarr image names {len(axes)} axes ({axes}) for an array of shape {arr.shape}")
    return arr, axes


def _frames_by_axes(arr: da.Array, axes: str, path: Path) -> da.Array:
    """(T, H, W[, C]) frames of an array whose axes are named (``T`` time, ``C`` channels, ``Y``
    ``X``, any other of size 1, or the frame axis when there is no ``T``), one chunk per frame."""
    if "Y" not in axes or "X" not in axes:
        raise FrameReadError(f"{path.name} has axes {axes}: no Y and X axes to make frames of")
    frame_axis = _frame_axis(path, axes, tuple(arr.shape), axes)
    order = ([axes.index(frame_axis)] if frame_axis else []) + [axes.index("Y"), axes.index("X")]
    if "C" in axes:
        order.append(axes.index("C"))
    rest = [i for i in range(arr.ndim) if i not in order]  # (axes of size 1)
    out = arr.transpose(order + rest).reshape([arr.shape[i] for i in order])
    if frame_axis is None:
        out = out[None]
    if out.ndim == 4 and out.shape[-1] == 1:  # (one channel)
        out = out[..., 0]
    return out.rechunk((1,) + out.shape[1:])


# --------------------------------------------------------------------------- public
def open_frames(path: str | Path) -> da.Array:
    """Open a video or image stack lazily.

    Parameters
    ----------
    path : str or Path
        A video file (.mp4, .avi, .mov, .mkv, ...), a folder of images (one per frame, sorted by
        the numbers in their names), a multi-page (OME-)TIFF stack, or a zarr array/group.

    Returns
    -------
    dask.array.Array
        (T, H, W) or (T, H, W, C), one chunk per frame; nothing is decoded until computed.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    FrameReadError
        The file cannot be decoded, has an unsupported extension, or frames have mixed shapes.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    suffix = p.suffix.lower()
    if p.is_dir():
        if suffix == ".zarr" or (p / "zarr.json").exists() or (p / ".zarray").exists() or (p / ".zgroup").exists():
            frames = _open_zarr(p)
        else:
            frames = _open_image_folder(p)
    elif suffix in VIDEO_EXTENSIONS:
        frames = _open_video(p)
    elif suffix in TIFF_EXTENSIONS:
        frames = _open_tiff(p)
    elif suffix in IMAGE_EXTENSIONS:
        frames = da.from_array(read_image(p)[None])
    else:
        raise FrameReadError(
            f"unsupported file type {suffix or '(none)'} for {p.name}; napari-ivoma opens videos "
            f"({', '.join(VIDEO_EXTENSIONS)}), image folders, TIFF stacks and zarr arrays"
        )
    if frames.ndim not in (3, 4):
        raise FrameReadError(f"{p} gives frames of shape {frames.shape}; expected (T, H, W) or (T, H, W, C)")
    return frames


def frames_have_channels(path: str | Path, frames: da.Array | None = None) -> bool:
    """Whether the last axis of :func:`open_frames`' (T, H, W, C) frames holds separate channels
    (fluorescence: shown and annotated one at a time) rather than colour (RGB / RGBA).

    A TIFF or an OME-Zarr image says so by its axes (``C``); otherwise 3 values per pixel, or
    4 of 8 bits, are colour and any other number channels.
    """
    frames = open_frames(path) if frames is None else frames
    if frames.ndim != 4:
        return False
    if frames.shape[-1] not in (3, 4) or (frames.shape[-1] == 4 and not is_rgba(4, frames.dtype)):
        return True
    p = Path(path)
    if p.is_file() and p.suffix.lower() in TIFF_EXTENSIONS:
        import tifffile

        try:
            with tifffile.TiffFile(p) as tif:
                return "C" in str(tif.series[0].axes)
        except Exception:  # noqa: BLE001 - it was opened already; colour is the safe reading
            return False
    if p.is_dir():
        import zarr

        try:
            node = zarr.open(str(p), mode="r")
            return isinstance(node, zarr.Group) and "C" in (ome_zarr_image(node) or (None, ""))[1]
        except Exception:  # noqa: BLE001
            return False
    return False


def is_rgba(n_channels: int, dtype) -> bool:
    """Whether frames of ``n_channels`` values per pixel of ``dtype`` are colour with alpha
    (four 8-bit values); four values of another type are four channels (fluorescence)."""
    return n_channels == 4 and np.dtype(dtype) == np.uint8


def to_float_image(frame: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Convert one frame to (H, W, C) float32 in [0, 1].

    Parameters
    ----------
    frame : (H, W) or (H, W, C) array, uint8, uint16 or float
    value_range : (low, high), optional
        Intensities mapped to 0 and 1.  By default uint8 uses (0, 255); other types use
        robust per-video percentiles when the caller passes them, else the frame's own 0.5 and
        99.5 percentiles of its finite values (so low-contrast 16-bit microscopy uses the whole
        range).

    Returns
    -------
    (H, W, C) float32 array; the alpha channel of an 8-bit RGBA frame (C == 4) is dropped
    (four channels of another type are four channels: fluorescence).  Non-finite values (NaN
    padding of a registered or stitched stack) become 0, +inf 1.
    """
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"a frame must be (H, W) or (H, W, C), got shape {a.shape}")
    if is_rgba(a.shape[-1], a.dtype):
        a = a[..., :3]
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if value_range is None:
        if a.dtype == np.uint8:
            value_range = (0.0, 255.0)
        else:
            value_range = _finite_range(a[::2, ::2], (0.5, 99.5))
    lo, hi = value_range
    out = (a.astype(np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))
    if a.dtype.kind == "f":
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


def _finite_range(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """(low, high) percentiles of the finite ``values`` (high > low; (0, 1) when none is finite)."""
    v = np.asarray(values)
    if v.dtype.kind == "f":
        v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(v, percentiles)
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
