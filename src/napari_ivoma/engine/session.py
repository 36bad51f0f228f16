"""Session: one video being annotated (frames, references, memory pool, masks).

Reads like SAM2's video predictor: make a session on a video, add scribbles on any frame
(CPSM), propagate (MRGS), correct any frame, undo.
"""

from __future__ import annotations

import inspect
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ._masks import bounding_box
from .backends import Backend, get_backend
from .io import _finite_range, is_rgba, to_float_image
from .scribbles import MAX_OBJECT_ID, Scribble, clip_scribble
from .store import (
    LABEL_DTYPE,
    MaskStore,
    label_ids,
    object_lineage,
    relabel,
    sampled_frame_indices,
    video_fingerprint,
)

__all__ = ["Session"]

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool] | threading.Event


#: the smallest frame side a session accepts (OpenCV's DIS optical flow needs 12 px)
MIN_FRAME_SIDE = 12


def _validate_frames(frames: Any) -> None:
    shape = getattr(frames, "shape", None)
    if shape is None or len(shape) not in (3, 4):
        raise ValueError(
            f"frames must be an array of shape (T, H, W) or (T, H, W, C), got shape {shape}"
        )
    if min(shape[:3]) < 1:
        raise ValueError(f"frames have an empty dimension: shape {tuple(shape)}")
    if min(shape[1:3]) < MIN_FRAME_SIDE:
        raise ValueError(f"frames of {shape[1]}x{shape[2]} pixels are too small: both sides must be at least "
                         f"{MIN_FRAME_SIDE} pixels")
    dt = np.dtype(frames.dtype)
    if not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating) or dt == np.bool_):
        raise ValueError(f"frames must be uint8, uint16 or float, got dtype {dt}")


class Session:
    """Annotation session of one video.

    Parameters
    ----------
    frames : array-like, (T, H, W) or (T, H, W, C)
        numpy, dask or zarr array; uint8, uint16 or float.  Read lazily, frame by frame.
    store : path, optional
        Folder of the zarr mask store: created if missing, resumed if present (refused if it
        belongs to another video).  ``None`` keeps masks in memory.
    params : dict, optional
        Engine parameters by name (see :class:`~napari_ivoma.engine.cpsm.CPSMParams` and
        :class:`~napari_ivoma.engine.mrgs.MRGSParams`).
    backend : str or Backend, optional
        Segmentation backend; default ``"classical"`` (no pretrained weights).
    source : str, optional
        Where the frames came from (recorded in the store's provenance).
    """

    def __init__(self, frames: Any, store: str | None = None, params: dict | None = None,
                 backend: str | Backend | None = None, source: str | None = None):
        _validate_frames(frames)
        self.frames = frames
        self.n_frames = int(frames.shape[0])
        self.height, self.width = int(frames.shape[1]), int(frames.shape[2])
        self.backend: Backend = get_backend(backend, params)
        # a few frames summarise the video: intensity range, channel projection, fingerprint
        samples = {t: np.asarray(frames[t]) for t in sampled_frame_indices(self.n_frames)}
        self._value_range = self._intensity_range(samples)
        self._channel_map = self._channel_projection(samples)
        prov = {"engine_version": __version__, "backend": self.backend.name,
                "params": self.backend.params_dict(), "source": None if source is None else str(source)}
        self.store = MaskStore(store, self.n_frames, self.height, self.width,
                               fingerprint=video_fingerprint(frames, samples), provenance=prov)
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._image_cache_size = 16
        self._lock = threading.RLock()  # one action at a time
        self._image_lock = threading.Lock()  # the frame cache (read by propagation threads)
        self._id_lock = threading.Lock()  # new object ids (allocated by propagation threads)
        self._prepared: OrderedDict[int, Future] = OrderedDict()  # per-frame work, see prepare()
        self._prep_lock = threading.Lock()
        self._prep_worker: ThreadPoolExecutor | None = None
        self.memory = self.backend.new_memory()
        for t in self.user_references:
            self.memory.add(t, self.image(t), self.store.read(t))

    # ------------------------------------------------------------------ read-only views
    @property
    def labels(self):
        """(T, H, W) uint32 masks of every frame (the store's zarr array)."""
        return self.store.labels

    @property
    def store_path(self):
        return self.store.path

    @property
    def objects(self) -> dict[int, dict]:
        """Object table: id -> {name, colour, parent}."""
        with self._id_lock:  # propagation threads may be adding objects (daughters, proposals)
            return self.store.objects

    def lineage(self) -> dict[int, int]:
        """Object id -> the id of the object it divided from (objects with a parent only)."""
        return object_lineage(self.objects)

    @property
    def proposals(self) -> dict[int, tuple[int, int]]:
        """Proposed objects (unclaimed foreground found by propagation, not yet named or
        dismissed): id -> (first, last) frame."""
        return {oid: tuple(obj["proposal"]["frames"]) for oid, obj in self.objects.items()
                if obj.get("proposal", {}).get("frames") and not obj["proposal"].get("dismissed")}

    @property
    def references(self) -> dict[int, str]:
        """Reference frames: t -> "user" or "auto"."""
        return {t: r["kind"] for t, r in sorted(self.store.references.items())}

    @property
    def user_references(self) -> list[int]:
        return sorted(t for t, r in self.store.references.items() if r["kind"] == "user")

    def scribbles(self, t: int) -> list[Scribble]:
        """All scribbles given on frame ``t`` (drawing order)."""
        return [Scribble.from_dict(d) for d in self.store.reference_scribbles(t)]

    def image(self, t: int) -> np.ndarray:
        """Frame ``t`` as (H, W, C) float32 in [0, 1] (small LRU cache)."""
        t = int(t)
        with self._image_lock:
            if t in self._images:
                self._images.move_to_end(t)
                return self._images[t]
        img = to_float_image(np.asarray(self.frames[t]), self._value_range)
        if self._channel_map is not None:
            mean, basis, lo, hi = self._channel_map
            img = np.clip(((img - mean) @ basis - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        with self._image_lock:
            self._images[t] = img
            while len(self._images) > self._image_cache_size:
                self._images.popitem(last=False)
        return img

    def _intensity_range(self, samples: dict[int, np.ndarray]) -> tuple[float, float] | None:
        """One intensity range for the whole video (so frames stay comparable)."""
        if np.dtype(self.frames.dtype) in (np.uint8, np.bool_):  # (to_float_image reads True as 255)
            return (0.0, 255.0)
        return _finite_range(np.concatenate([f[::4, ::4].ravel() for f in samples.values()]), (0.5, 99.8))

    def _channel_projection(self, samples: dict[int, np.ndarray]):
        """Frames with other than 1 or 3 channels are seen through their 3 principal components
        (computed once from a few frames), so every backend gets grey or 3-channel images."""
        c = 1 if len(self.frames.shape) == 3 else int(self.frames.shape[3])
        if c in (1, 3):
            return None
        if is_rgba(c, self.frames.dtype):
            return None  # RGBA: to_float_image drops alpha
        x = np.concatenate([to_float_image(f, self._value_range)[::4, ::4].reshape(-1, c)
                            for f in samples.values()])
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        basis = np.zeros((c, 3), np.float32)
        k = min(3, vt.shape[0])
        basis[:, :k] = vt[:k].T
        proj = (x - mean) @ basis
        lo, hi = np.percentile(proj, 0.5, axis=0), np.percentile(proj, 99.5, axis=0)
        return mean.astype(np.float32), basis, lo.astype(np.float32), np.maximum(hi, lo + 1e-6).astype(np.float32)

    def _flow_cache(self):
        """Optical flow between frames, shared by scribbles-to-mask and propagation."""
        from .motion import FlowCache, to_gray_u8
        from .mrgs import MRGSParams

        params = getattr(self.backend, "mrgs_params", None) or MRGSParams()
        flows = getattr(self, "_flows", None)
        if flows is None or flows.preset != params.flow_preset or flows.scale != params.flow_scale:
            flows = FlowCache(lambda t: to_gray_u8(self.image(t)), params.flow_preset, scale=params.flow_scale)
            self._flows = flows
        return flows

    def _motion(self, t: int) -> np.ndarray | None:
        """Frame ``t``'s own motion against its neighbouring frames (camera motion removed)."""
        from .motion import motion_features

        nbrs = [u for u in (t - 1, t + 1) if 0 <= u < self.n_frames]
        if not nbrs:
            return None
        flows = self._flow_cache()
        return motion_features([flows.flow(t, u) for u in nbrs], self.image(t), [self.image(u) for u in nbrs])

    # ------------------------------------------------------------------ frame preparation
    def prepare(self, t: int, wait: bool = False) -> None:
        """Precompute, in a background thread, the work scribbles on frame ``t`` need that does
        not depend on the strokes: the decoded frame, its motion and the backend's per-frame
        features (``backend.prepare(image)``, when it has one).

        An interface calls this when the user shows a frame: drawing a stroke takes seconds,
        and the strokes are then answered sooner (a SAM-style tool computes its image
        embedding the same way).  Results are the same with or without it.  A request not yet
        started is dropped when a newer one comes, so scrolling through a video does not
        queue work; the last few frames stay prepared.  ``wait=True`` blocks until ``t`` is
        ready.
        """
        t = self._check_t(t)
        with self._prep_lock:
            fut = self._prepared.get(t)
            if fut is None or fut.cancelled():
                for u, other in list(self._prepared.items()):
                    if other.cancel():  # not started yet: a newer frame is wanted
                        del self._prepared[u]
                if self._prep_worker is None:
                    self._prep_worker = ThreadPoolExecutor(1, thread_name_prefix="ivoma-prepare")
                fut = self._prep_worker.submit(self._compute_prepared, t)
            self._remember_prepared(t, fut)
        if wait:
            fut.result()

    _prepared_cache_size = 3

    def _remember_prepared(self, t: int, fut: Future) -> None:
        """Keep ``fut`` as frame ``t``'s preparation, the newest; drop the oldest beyond the
        cache size (call with ``_prep_lock`` held)."""
        self._prepared[t] = fut
        self._prepared.move_to_end(t)
        while len(self._prepared) > self._prepared_cache_size:
            self._prepared.popitem(last=False)

    def _compute_prepared(self, t: int) -> tuple[Any, np.ndarray | None]:
        image = self.image(t)
        wants = self._backend_takes("motion") and getattr(self.backend, "uses_motion", True)
        motion = self._motion(t) if wants else None
        prep = getattr(self.backend, "prepare", None)
        return (prep(image) if callable(prep) else None), motion

    def _prepared_frame(self, t: int) -> tuple[Any, np.ndarray | None]:
        """(backend's prepared frame, motion) of frame ``t``: from :meth:`prepare` (waiting for
        it when under way) or computed now (also when that request was dropped for a newer one
        or failed: a real error then comes up here)."""
        with self._prep_lock:
            fut = self._prepared.get(t)
        if fut is not None:
            try:
                return fut.result()
            except (CancelledError, Exception):  # noqa: BLE001 - recomputed below
                pass
        result = self._compute_prepared(t)
        done: Future = Future()
        done.set_result(result)
        with self._prep_lock:
            self._remember_prepared(t, done)
        return result

    def _backend_takes(self, keyword: str) -> bool:
        return _accepts(self.backend.scribbles_to_mask, keyword)

    def _check_t(self, t: Any) -> int:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {t!r}")
        if not 0 <= int(t) < self.n_frames:
            raise IndexError(f"frame index {t} out of range: the video has {self.n_frames} frames (0..{self.n_frames - 1})")
        return int(t)

    # ------------------------------------------------------------------ actions
    def add_scribbles(self, t: int, scribbles: Sequence[Scribble]) -> np.ndarray:
        """Turn scribbles on frame ``t`` into its multi-object mask (CPSM).

        Parameters
        ----------
        t : int
            Frame index.
        scribbles : list of Scribble
            New strokes, in drawing order (the later wins where two ids cross).  All scribbles
            ever given on frame ``t`` stay hard constraints.

        Returns
        -------
        (H, W) uint32 labels of frame ``t``, which becomes a user reference.
        """
        t = self._check_t(t)
        if scribbles is None or len(scribbles) == 0:
            raise ValueError(
                "add_scribbles needs at least one Scribble(object_id, points) on the frame; "
                "got an empty list (draw a stroke with an object id, 0 for background)"
            )
        for s in scribbles:
            if not isinstance(s, Scribble):
                raise TypeError(f"expected Scribble objects, got {type(s).__name__}")
        clipped = [c for c in (clip_scribble(s, (self.height, self.width)) for s in scribbles) if c is not None]
        if not clipped:
            raise ValueError(
                f"all {len(scribbles)} scribbles lie outside the {self.height}x{self.width} frame; nothing to do"
            )
        with self._lock:
            image = self.image(t)
            prior = stored = self.store.read(t)
            has_prior = bool(prior.any()) or t in self.store.references
            everything = self.scribbles(t) + clipped
            new_ids = {s.object_id for s in clipped}
            claims = self._proposal_claims(prior, clipped) if has_prior else {}
            if claims:  # all at once, as on the other frames (a may be named b while b is named c)
                prior = relabel(prior, {pid: k for pid, (k, _) in claims.items()})
            if has_prior:
                prior = _rename_stroked_objects(prior, clipped)
            prepared, motion = self._prepared_frame(t)
            extra = {}
            if self._backend_takes("motion"):
                extra["motion"] = motion
            if prepared is not None and self._backend_takes("prepared"):
                extra["prepared"] = prepared
            labels = self.backend.scribbles_to_mask(
                image, everything, prior if has_prior else None, new_ids, self.memory, **extra
            ).astype(LABEL_DTYPE, copy=False)
            self.store.begin_step("add_scribbles", t)
            self._settle_proposals(t, claims)
            self.store.write(t, labels, previous=stored)  # (read once: undo keeps it)
            for oid in sorted({s.object_id for s in everything} | set(label_ids(labels))):
                self.store.ensure_object(int(oid))
            self.store.set_reference(t, "user", [s.to_dict() for s in everything])
            self.store.flush_attrs()
            if prepared is not None and _accepts(self.memory.add, "prepared"):
                self.memory.add(t, image, labels, prepared=prepared)
            else:
                self.memory.add(t, image, labels)
        return labels

    def set_labels(self, t: int, labels: np.ndarray, previous: np.ndarray | None = None) -> None:
        """Make a hand-edited (or imported) frame a user reference, as it is.

        Parameters
        ----------
        t : int
        labels : (H, W) integer array, ids >= 0
        previous : (H, W) array, optional
            What frame ``t`` held before the edit, when the edit was already written into
            :attr:`labels` in place (a brush painting on the store's array); undo restores it.
        """
        t = self._check_t(t)
        arr = np.asarray(labels)
        if arr.shape != (self.height, self.width):
            raise ValueError(f"labels of frame {t} must have shape {(self.height, self.width)}, got {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.all(np.mod(arr, 1) == 0):
                raise ValueError("labels must be integer object ids, got non-integer values")
        elif arr.dtype.kind not in "uib":
            raise ValueError(f"labels must be integer object ids, got dtype {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise ValueError(f"labels contain a negative object id ({int(arr.min())}); ids must be >= 0")
        if arr.size and arr.max() > MAX_OBJECT_ID:
            raise ValueError(f"labels contain object id {int(arr.max())}; the largest object id is {MAX_OBJECT_ID}")
        arr = arr.astype(LABEL_DTYPE)
        with self._lock:
            if previous is not None and np.shape(previous) != arr.shape:
                raise ValueError(f"previous labels of frame {t} must have shape {arr.shape}")
            self.store.begin_step("set_labels", t)
            self.store.write(t, arr, previous=previous)
            for oid in np.unique(arr):
                self.store.ensure_object(int(oid))
            self.store.set_reference(t, "user", keep_scribbles=True)
            self.store.flush_attrs()
            self.memory.add(t, self.image(t), arr)

    def propagate(self, start: int | None = None, stop: int | None = None,
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None):
        """Propagate the masks of all references over the video (MRGS).

        Parameters
        ----------
        start, stop : int, optional
            Only frames in ``[start, stop)`` are touched (default: the whole video).
        progress : callable(done, total), optional
            Called as frames complete.
        cancel : callable returning bool, or threading.Event, optional
            Stops cleanly: frames not reached keep their previous masks.

        Returns
        -------
        (T, H, W) uint32 array-like (the store's zarr array).
        """
        from .mrgs import propagate_session

        if not self.user_references:
            raise ValueError("nothing to propagate yet: scribble on a frame (add_scribbles) or set_labels first")
        start = 0 if start is None else max(0, int(start))
        stop = self.n_frames if stop is None else min(self.n_frames, int(stop))
        if start >= stop:
            raise ValueError(f"empty frame range: start={start}, stop={stop}")
        is_cancelled = _cancel_check(cancel)
        with self._lock:
            if not self.store.can_undo():
                self.store.begin_step("propagate", start)
            propagate_session(self, start, stop, progress, is_cancelled)
            self.store.flush_attrs()
        return self.labels

    def export_masks(self, folder: str | os.PathLike, fmt: str = "png", start: int | None = None,
                     stop: int | None = None, overwrite: bool = False, progress: ProgressFn | None = None,
                     cancel: CancelFn | None = None) -> list[Path]:
        """Write the masks as per-frame PNGs (``png``, DAVIS layout), per-frame TIFFs (``tif``,
        Cell Tracking Challenge layout), one multi-page TIFF (``tif-stack``) or a Cell Tracking
        Challenge result with its lineage table (``ctc``: ``res_track.txt``), frame by frame, or
        a table of every object's area, centroid and box per frame (``csv``: ``objects.csv``).

        Files of the same names already in ``folder`` are an error unless ``overwrite``; see
        :func:`napari_ivoma.engine.export.export_masks` for the layouts and the other arguments.
        Returns the files written.
        """
        from .export import export_masks

        with self._lock:
            max_id = max(self.store.objects, default=0)
            return export_masks(self.labels, folder, fmt, start=start, stop=stop, max_id=max_id,
                                overwrite=overwrite, progress=progress, cancel=cancel,
                                objects=self.objects)

    def undo(self) -> int:
        """Revert the last add_scribbles/set_labels and what propagation did after it.

        Returns the frame index of the undone action.
        """
        with self._lock:
            if not self.store.can_undo():
                raise RuntimeError("nothing to undo")
            step = self.store.undo()
            t = int(step["t"])
            if t in self.user_references:
                self.memory.add(t, self.image(t), self.store.read(t))
            else:
                self.memory.remove(t)
        return t

    def remove_reference(self, t: int) -> None:
        """Frame ``t`` stops being a reference: its scribbles are forgotten and the next
        propagation recomputes it from the neighbouring references (undoable)."""
        t = self._check_t(t)
        with self._lock:
            if t not in self.store.references:
                raise ValueError(f"frame {t} is not a reference frame")
            self.store.begin_step("remove_reference", t)
            self.store.remove_reference(t)
            self.store.computed_from[t] = np.full(4, -2, np.int64)  # stale: recomputed next time
            self.store.flush_attrs()
            self.memory.remove(t)

    def _new_object(self, parent: int | None = None) -> int:
        """A new, proposed object (found by propagation: unclaimed foreground, or a daughter
        when an object divides, lineage kept).  Like every proposal, one stroke names it on
        all its frames."""
        with self._id_lock:
            new = max(self.store.objects, default=0) + 1
            if new > MAX_OBJECT_ID:  # (the user took the largest id: the smallest free one)
                taken = set(self.store.objects)
                new = next(i for i in range(1, len(taken) + 2) if i not in taken)
            self.store.ensure_object(new, parent=parent)
            obj = self.store.attrs["objects"][str(new)]
            obj["name"] = f"proposal {new}" + ("" if parent is None else f" (from {parent})")
            obj["proposal"] = {}
        return new

    def _proposal_claims(self, prior: np.ndarray, strokes: Sequence[Scribble]) -> dict[int, tuple]:
        """Proposed objects named (stroke of an object id) or dismissed (background stroke) by
        the new strokes: proposal id -> (new id, 0 = dismissed; its box on this frame).  A
        stroke claims the proposal under most of its points."""
        open_ids = set(self.proposals)
        if not open_ids:
            return {}
        claims: dict[int, tuple] = {}
        for s in strokes:
            j = _object_under(prior, s)
            if j in open_ids and j not in claims and j != s.object_id:
                claims[j] = (int(s.object_id), list(bounding_box(prior == j)))
        return claims

    def _settle_proposals(self, t: int, claims: dict[int, tuple]) -> None:
        """Apply named / dismissed proposals to every frame they were written on (undoable:
        called inside the undo step of the action)."""
        spans = self.proposals
        frames: dict[int, dict[int, int]] = {}  # frame -> {proposal id: new id}, each frame rewritten once
        for pid, (k, _) in claims.items():
            first, last = spans[pid]
            for u in range(first, last + 1):
                if u != t:
                    frames.setdefault(u, {})[pid] = k
        parts: list[list[int]] = []  # runs of frames read and written per zarr call
        for u in sorted(frames):      # (zarr's cost is per call; memory stays bounded)
            if parts and u - parts[-1][0] < _RENAME_BLOCK:
                parts[-1].append(u)
            else:
                parts.append([u])
        for part in parts:
            stack = np.asarray(self.store.labels[part[0]:part[-1] + 1])
            changed = {}
            for u in part:
                lab = stack[u - part[0]]
                renamed = relabel(lab, frames[u])
                if not np.array_equal(renamed, lab):
                    changed[u] = (renamed, lab)
            self.store.write_frames(changed)
        for pid, (k, box) in claims.items():
            obj = self.store.attrs["objects"][str(pid)]
            if k == 0:  # remembered, so that propagation does not propose it again
                obj["proposal"]["dismissed"] = [{"t": int(t), "box": box}]
            else:  # the named object inherits the proposal's lineage (never itself as parent:
                # a daughter named with its parent's id is the parent going on)
                parent = self.store.attrs["objects"].pop(str(pid)).get("parent")
                self.store.ensure_object(k)
                named = self.store.attrs["objects"][str(k)]
                if named.get("parent") is None and parent != k:
                    named["parent"] = parent

    def close(self) -> None:
        """Write pending attributes and drop prepared frames; the session's arrays stay readable."""
        with self._prep_lock:
            for fut in self._prepared.values():
                fut.cancel()
            self._prepared.clear()
            worker, self._prep_worker = self._prep_worker, None
        if worker is not None:
            worker.shutdown(wait=False)
        with self._lock:
            self.store.flush_attrs()

    def name_object(self, object_id: int, name: str) -> None:
        """Give an object a name (kept in the store)."""
        self.store.ensure_object(int(object_id))
        self.store.attrs["objects"][str(int(object_id))]["name"] = str(name)
        self.store.flush_attrs()


#: frames renamed per zarr read / write when a proposal is named on every frame it spans
_RENAME_BLOCK = 32


def _accepts(fn: Callable, keyword: str) -> bool:
    """Whether ``fn`` takes the keyword argument ``keyword`` (optional parts of the backend
    protocol)."""
    return keyword in inspect.signature(fn).parameters


def _object_under(labels: np.ndarray, stroke: Scribble) -> int | None:
    """The label under most (at least half) of a stroke's points, or None."""
    h, w = labels.shape
    pts = np.rint(stroke.points).astype(int)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)]
    if not len(pts):
        return None
    ids, counts = np.unique(labels[pts[:, 0], pts[:, 1]], return_counts=True)
    return int(ids[np.argmax(counts)]) if counts.max() >= 0.5 * len(pts) else None


def _rename_stroked_objects(prior: np.ndarray, strokes: Sequence[Scribble]) -> np.ndarray:
    """A stroke of a new id drawn inside an existing object renames that object.

    When most of a stroke of id ``k`` (absent from the prior) lies on one prior object ``j``
    that no stroke of this round names, the user is saying "this is ``k``": ``j``'s pixels become
    ``k``'s prior.  (Propagation may have carried the wrong identity there, e.g. a daughter cell's
    id back onto its parent.)
    """
    present = set(label_ids(prior))
    named = {s.object_id for s in strokes}
    out = prior
    for s in strokes:
        k = s.object_id
        if k == 0 or k in present:
            continue
        j = _object_under(prior, s)
        if j is None or j == 0 or j in named:
            continue
        if out is prior:
            out = prior.copy()
        out[prior == j] = k
        present.add(k)
        named.add(j)  # one object is renamed once per round
    return out


def _cancel_check(cancel: CancelFn | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    warnings.warn("cancel must be a callable or threading.Event; ignored", stacklevel=3)
    return lambda: False
