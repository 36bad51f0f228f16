"""Benchmark sequences: ``<seq>/frames/*`` + ``<seq>/masks/*`` folders.

Frames are JPEG/PNG/TIFF, RGB or 8/16-bit grey, kept in their dtype.  Masks are
binary grey PNGs (only 0 and 255; ``> 127`` is the object) or integer label
images (TIFF, 16-bit / palette PNG, or 8-bit grey PNG with ids as values) whose
ids are relabelled ``1..K`` consistently over the whole sequence.  A sequence
is an *instance* sequence (microscopy, scored with CTC SEG too) when its masks
are label images and its frames are grey.  Frames and masks are paired by the last number in their
file names (``00012.jpg`` <-> ``00012.png``, ``t012.tif`` <-> ``man_seg012.tif``).

Sequences whose ground truth is partial (masks missing for some frames, as in
the Cell Tracking Challenge GOWT1 sets, whose ids are also per-frame) cannot be
scored by the protocol and raise :class:`SkipSequence`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_ivoma.engine.io import read_image

__all__ = [
    "Sequence",
    "SkipSequence",
    "find_sequences",
    "is_sequence_folder",
    "load_sequence",
    "frame_number",
    "pan_out_and_back",
]

FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
MASK_SUFFIXES = {".png", ".tif", ".tiff"}
_TIFF = {".tif", ".tiff"}


class SkipSequence(Exception):
    """The folder is a sequence, but the protocol cannot score it (reason in the message)."""


@dataclass
class Sequence:
    """One loaded benchmark sequence.

    Attributes
    ----------
    name : str
        Folder name.
    path : Path
    frames : ndarray
        (T, H, W) or (T, H, W, 3), dtype as stored (uint8 / uint16 ...).
    masks : ndarray
        (T, H, W) uint32 ground truth, 0 = background, objects ``1..n_objects``.
    n_objects : int
    instance : bool
        True for microscopy-like instance labels (integer label masks on grey frames).
    """

    name: str
    path: Path
    frames: np.ndarray
    masks: np.ndarray
    n_objects: int
    instance: bool

    @property
    def object_ids(self) -> list[int]:
        return list(range(1, self.n_objects + 1))


def frame_number(path: Path) -> int:
    """The last integer in the file stem (``t012`` -> 12); ``ValueError`` when there is none."""
    numbers = re.findall(r"\d+", Path(path).stem)
    if not numbers:
        raise ValueError(f"cannot pair frames and masks: no number in the file name {Path(path).name!r}")
    return int(numbers[-1])


def is_sequence_folder(path: Path) -> bool:
    """True when ``path`` holds ``frames/`` and ``masks/`` sub-folders."""
    path = Path(path)
    return (path / "frames").is_dir() and (path / "masks").is_dir()


def find_sequences(path: str | Path) -> list[Path]:
    """Sequence folders at ``path``: the folder itself, or the sequence folders below it (sorted).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist or holds no sequence folder.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"benchmark path {str(path)!r} is not a folder")
    if is_sequence_folder(path):
        return [path]
    found: list[Path] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        if is_sequence_folder(child):
            found.append(child)
        else:
            found.extend(_find_below(child))
    if not found:
        raise FileNotFoundError(
            f"no sequence folder (with frames/ and masks/ sub-folders) found in {str(path)!r}"
        )
    return found


def _find_below(path: Path) -> list[Path]:
    out: list[Path] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        if is_sequence_folder(child):
            out.append(child)
        elif child.name not in ("frames", "masks"):
            out.extend(_find_below(child))
    return out


def _indexed_files(folder: Path, suffixes: set[str]) -> dict[int, Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    out: dict[int, Path] = {}
    for p in sorted(files):
        idx = frame_number(p)
        if idx in out:
            raise ValueError(f"two files with frame number {idx} in {folder}: {out[idx].name}, {p.name}")
        out[idx] = p
    return out


def read_frame(path: Path) -> np.ndarray:
    """One frame as (H, W) grey or (H, W, 3) RGB, dtype kept (alpha dropped).

    Decoding is the engine's (:func:`napari_ivoma.engine.io.read_image`); channel-first
    TIFF pages are moved channel-last.
    """
    img = read_image(path)
    img = np.squeeze(img)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[0] in (3, 4) and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img[:3], 0, -1)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(f"{path}: expected a grey or RGB frame, got an array of shape {img.shape}")
    return img


def read_mask(path: Path) -> tuple[np.ndarray, bool]:
    """One mask as (H, W) integer ids and whether it is an integer label image.

    An 8-bit grey PNG holding only the values 0 and 255 (a binary mask, as in
    DAVIS) gives ``> 127`` -> 1; other grey PNGs (object ids as pixel values),
    16/32-bit and palette PNGs and TIFFs keep their ids.
    """
    if path.suffix.lower() in _TIFF:
        import tifffile

        img = np.squeeze(np.asarray(tifffile.imread(path)))
        if img.ndim != 2:
            raise ValueError(f"{path}: a label mask must be 2-D, got shape {img.shape}")
        if img.dtype == bool:
            return img.astype(np.int64), False
        if np.issubdtype(img.dtype, np.floating) and not np.all(np.mod(img, 1) == 0):
            raise ValueError(f"{path}: label mask has non-integer values")
        return img.astype(np.int64), True
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P":
            return np.asarray(im).astype(np.int64), True
        if im.mode in ("I", "I;16", "I;16B", "I;16L"):
            return np.asarray(im).astype(np.int64), True
        if im.mode in ("L", "LA", "1"):
            grey = np.asarray(im.convert("L"))
            if np.isin(grey, (0, 255)).all():
                return (grey > 127).astype(np.int64), False
            return grey.astype(np.int64), True
        grey = np.asarray(im.convert("L"))
    return (grey > 127).astype(np.int64), False


def relabel(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Map the ids of a (T, H, W) label stack to ``1..K`` (sorted order), same map for every frame."""
    ids = np.unique(masks)
    ids = ids[ids != 0]
    lut_index = np.searchsorted(ids, masks)
    out = np.where(masks == 0, 0, lut_index + 1).astype(np.uint32)
    return out, len(ids)


def load_sequence(path: str | Path, max_frames: int | None = None) -> Sequence:
    """Load one sequence folder.

    Parameters
    ----------
    path : folder with ``frames/`` and ``masks/``
    max_frames : keep only the first ``max_frames`` frames (None = all)

    Raises
    ------
    SkipSequence
        Ground truth is partial (masks missing for some frames) or empty.
    ValueError
        Unreadable or inconsistent files.
    """
    path = Path(path)
    if not is_sequence_folder(path):
        raise FileNotFoundError(f"{str(path)!r} is not a sequence folder (needs frames/ and masks/)")
    frame_files = _indexed_files(path / "frames", FRAME_SUFFIXES)
    mask_files = _indexed_files(path / "masks", MASK_SUFFIXES)
    if not frame_files:
        raise SkipSequence(f"{path.name}: no frames (JPEG/PNG/TIFF) in {path / 'frames'}")
    indices = sorted(frame_files)
    missing = [i for i in indices if i not in mask_files]
    if missing:
        raise SkipSequence(
            f"{path.name}: masks missing for {len(missing)} of {len(indices)} frames "
            f"(partial ground truth, e.g. Cell Tracking Challenge GOWT1 with per-frame ids); "
            f"the protocol needs a dense ground truth with ids consistent over time"
        )
    if max_frames is not None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        indices = indices[:max_frames]
    frames = [read_frame(frame_files[i]) for i in indices]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{path.name}: frames have different shapes {sorted(shapes)}")
    raw_masks, is_label = zip(*(read_mask(mask_files[i]) for i in indices))
    hw = frames[0].shape[:2]
    for i, m in zip(indices, raw_masks):
        if m.shape != hw:
            raise ValueError(f"{path.name}: mask of frame {i} has shape {m.shape}, frame has {hw}")
    masks, k = relabel(np.stack(raw_masks))
    if k == 0:
        raise SkipSequence(f"{path.name}: the ground truth masks are empty (no object to annotate)")
    return Sequence(
        name=path.name,
        path=path,
        frames=np.stack(frames),
        masks=masks,
        n_objects=k,
        instance=bool(any(is_label)) and frames[0].ndim == 2,
    )


def pan_out_and_back(frames: np.ndarray, masks: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Real footage in which the object leaves the frame and comes back.

    Frames and masks are halved, then cropped to a window ``width`` px wide that pans away from
    the object (towards the side with more room) until it has left, and back again: the window
    follows a sine over the clip, so it starts and ends on the object.
    """
    import cv2

    def half(a: np.ndarray, interp: int) -> np.ndarray:
        return cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=interp)

    f = np.stack([half(x, cv2.INTER_AREA) for x in frames])
    m = np.stack([half(x.astype(np.uint16), cv2.INTER_NEAREST) for x in masks]).astype(np.uint32)
    n, _, w = m.shape
    if not 0 < width <= w:
        raise ValueError(f"window width must be in 1..{w}, got {width}")
    cx = np.array([np.nonzero(x.any(0))[0].mean() if x.any() else w / 2 for x in m])
    start = np.clip(cx - width / 2, 0, w - width)
    far = 0 if cx[n // 2] > w / 2 else w - width
    phase = np.sin(np.pi * np.arange(n) / max(n - 1, 1))
    x0 = np.round((1 - phase) * start + phase * far).astype(int)
    return (np.stack([f[t][:, x0[t]:x0[t] + width] for t in range(n)]),
            np.stack([m[t][:, x0[t]:x0[t] + width] for t in range(n)]))
