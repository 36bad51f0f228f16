"""The zarr mask store: labels of every frame plus what is needed to resume work.

Layout (zarr v3 group)::

    <store>.zarr/
      zarr.json            group attributes under key "ivoma" (see below)
      labels/              (T, H, W) uint32, one chunk per frame, zstd-compressed
      computed_from/       (T, 4) int64: the references each frame was propagated from
                           (previous ref t, its revision, next ref t, its revision; -1 = none)
      undo/<n>/            per undo step: previous labels of the frames that step changed, one
                           array per batch written at once ("b<k>", frames listed under
                           "batches"; older stores: one array "<t>" per frame); frames that
                           were empty are only listed, under "empty"

Group attributes ``ivoma``::

    format: 2
    objects:    {"<id>": {"name", "colour", "parent"}}
    references: {"<t>": {"kind": "user" | "auto", "revision", "scribbles": "<key>" | null}}
    scribbles:  {"<key>": [{"object_id", "points": "r,c r,c ...", "width"}]}: the scribbles of each
                user reference (all strokes given on that frame, drawing order; points as one string
                of "row,col" pairs, which zarr writes ~25x faster than nested lists; "width" only for
                a painted stroke wider than a line: a number, or one per point as one string),
                written once per
                change and shared by the reference and the undo steps that remember it (so the
                undo history does not copy every stroke twenty times)
    revision:   global counter, bumped whenever a reference changes
    undo:       [{"action", "t", "frames": [...], "empty": [...], "batches": {"b<k>": [t, ...]},
                  "state": {objects, references}}]
                (oldest first)
    provenance: {"engine_version", "params", "source", "fingerprint": {"shape", "dtype", "sampled_hash"}}

Format 1 kept the scribbles inside each reference (and each undo step's copy of it); such a store
is read as it is and written back as format 2.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = [
    "MaskStore",
    "StoreMismatchError",
    "video_fingerprint",
    "is_mask_store",
    "read_store_labels",
    "write_labels_store",
    "LABEL_DTYPE",
    "label_ids",
]

LABEL_DTYPE = np.uint32
FORMAT_VERSION = 2
ATTR_KEY = "ivoma"
#: colours for object ids (cycled); napari shows its own colours but the table keeps these
PALETTE = [
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
]


class StoreMismatchError(ValueError):
    """A mask store belongs to another video (or is not a mask store)."""


def _small_ids(arr: np.ndarray) -> bool:
    """Whether a histogram of the ids in ``arr`` (flat) is cheap: non-negative integers no larger
    than the pixel count (or 65536).  Ids go up to 2**31 - 1, and a histogram is as long as the
    largest id."""
    return bool(arr.size) and arr.dtype.kind in "ui" and int(arr.min()) >= 0 and int(arr.max()) <= max(arr.size, 1 << 16)


def object_areas(labels: np.ndarray) -> dict[int, int]:
    """Pixel count of every object id (not 0) present in a label image (a histogram when the
    ids are small, as object ids are; ``np.unique`` otherwise)."""
    arr = np.asarray(labels).ravel()
    if _small_ids(arr):
        counts = np.bincount(arr)
        ids = np.flatnonzero(counts)
        return {int(i): int(counts[i]) for i in ids if i}
    ids, counts = np.unique(arr, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i}


def object_lineage(objects: dict) -> dict[int, int]:
    """Object id -> the id it divided from, for the objects of an object table ({id: {...,
    "parent"}}, keys int or str as stored) that have a parent."""
    return {int(k): int(o["parent"]) for k, o in objects.items() if o.get("parent")}


def relabel(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """A copy of ``labels`` with the ids in ``mapping`` renamed (the others kept).  A lookup
    table when the ids are small; per renamed id otherwise (a table is as long as the largest
    id, and ids go up to 2**31 - 1)."""
    if not mapping:
        return labels.copy()
    top = max(int(labels.max()) if labels.size else 0, max(mapping))
    if top <= max(labels.size, 1 << 16):
        lut = np.arange(top + 1, dtype=labels.dtype)
        lut[list(mapping)] = list(mapping.values())
        return lut[labels]
    out = labels.copy()
    for old, new in mapping.items():
        out[labels == old] = new
    return out


def label_ids(labels: np.ndarray) -> list[int]:
    """The ids present in a label image (0 included when present), sorted.

    A histogram when the ids are small, as object ids are (~4x faster than ``np.unique`` on a
    480p frame, which sorts or hashes every pixel)."""
    arr = np.asarray(labels).ravel()
    if _small_ids(arr):
        return np.flatnonzero(np.bincount(arr)).tolist()
    return [int(i) for i in np.unique(arr)]


def _compressors():
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]


def sampled_frame_indices(n_frames: int) -> list[int]:
    """The frames a video is summarised by (first, middle, last)."""
    return sorted({0, n_frames // 2, n_frames - 1})


def video_fingerprint(frames: Any, samples: dict[int, np.ndarray] | None = None) -> dict:
    """Shape, dtype and a hash of a few sampled frames (:func:`sampled_frame_indices`).

    ``samples`` (frame index -> array) avoids reading frames the caller already read.
    """
    shape = tuple(int(s) for s in frames.shape)
    idx = sampled_frame_indices(shape[0])
    h = hashlib.sha256()
    for t in idx:
        f = np.ascontiguousarray(samples[t] if samples is not None else np.asarray(frames[t]))
        h.update(f[:: max(1, f.shape[0] // 64), :: max(1, f.shape[1] // 64)].tobytes())
    return {"shape": list(shape), "dtype": str(np.dtype(frames.dtype)), "sampled_frames": idx,
            "sampled_hash": h.hexdigest()[:32]}


def is_mask_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a napari-ivoma mask store."""
    p = Path(path)
    if not (p / "zarr.json").exists():
        return False
    try:
        g = zarr.open_group(str(p), mode="r")
    except Exception:  # noqa: BLE001
        return False
    return ATTR_KEY in g.attrs and "labels" in g


def read_store_labels(path: str | os.PathLike) -> zarr.Array:
    """The ``labels`` array of a mask store, opened read-write (lazy)."""
    if not is_mask_store(path):
        raise StoreMismatchError(f"{path} is not a napari-ivoma mask store (no 'labels' array with ivoma attributes)")
    return zarr.open_group(str(path), mode="r+")["labels"]


def _check_writable(p: Path) -> None:
    parent = p.parent if not p.exists() else p
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write the mask store at {p}: {parent} is not writable")


class MaskStore:
    """Labels of every frame with the objects, references and undo history of a session.

    Parameters
    ----------
    path : path or None
        Folder of the zarr store.  Created when missing, resumed when present.  ``None`` keeps
        everything in memory.
    n_frames, height, width : int
        Size of the video the store belongs to.
    fingerprint : dict, optional
        From :func:`video_fingerprint`; a present store with another fingerprint is refused.
    provenance : dict, optional
        Extra provenance recorded on creation (engine version, params, source path).
    """

    def __init__(self, path: str | os.PathLike | None, n_frames: int, height: int, width: int,
                 fingerprint: dict | None = None, provenance: dict | None = None,
                 max_undo: int = 20):
        self.path = None if path is None else Path(path)
        self.max_undo = max_undo
        shape = (int(n_frames), int(height), int(width))
        if self.path is None:
            self.group = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w")
            self._create(shape, fingerprint, provenance)
        elif self.path.exists() and not (self.path.is_dir() and not any(self.path.iterdir())):
            self._resume(shape, fingerprint)
        else:
            _check_writable(self.path)
            try:
                self.group = zarr.open_group(str(self.path), mode="w")
            except OSError as exc:
                raise PermissionError(f"cannot create the mask store at {self.path}: {exc}") from exc
            self._create(shape, fingerprint, provenance)
        self.labels: zarr.Array = self.group["labels"]
        self.computed_from: zarr.Array = self.group["computed_from"]

    # ------------------------------------------------------------------ create / resume
    def _create(self, shape, fingerprint, provenance) -> None:
        t, h, w = shape
        self.group.create_array("labels", shape=shape, chunks=(1, h, w), dtype=LABEL_DTYPE,
                                fill_value=0, compressors=_compressors())
        self.group.create_array("computed_from", shape=(t, 4), chunks=(max(1, min(t, 4096)), 4),
                                dtype=np.int64, fill_value=-1)
        prov = dict(provenance or {})
        prov["fingerprint"] = fingerprint
        self._attrs = {"format": FORMAT_VERSION, "objects": {}, "references": {}, "scribbles": {},
                       "revision": 0, "undo": [], "undo_counter": 0, "provenance": prov}
        self.flush_attrs()

    def _resume(self, shape, fingerprint) -> None:
        p = self.path
        if not is_mask_store(p):
            raise StoreMismatchError(
                f"{p} exists and is not a napari-ivoma mask store; choose another path "
                "(nothing was written there)"
            )
        if not os.access(p, os.W_OK):
            raise PermissionError(f"the mask store {p} is not writable")
        self.group = zarr.open_group(str(p), mode="r+")
        attrs = copy.deepcopy(dict(self.group.attrs[ATTR_KEY]))
        if int(attrs.get("format", 1)) > FORMAT_VERSION:
            raise StoreMismatchError(
                f"the mask store {p} has format {attrs.get('format')}, written by a newer napari-ivoma "
                f"(this one reads up to format {FORMAT_VERSION}); update napari-ivoma to open it "
                "(nothing was written there)"
            )
        self._attrs = _upgraded(attrs)
        have = tuple(self.group["labels"].shape)
        stored_fp = self._attrs.get("provenance", {}).get("fingerprint")
        if have != shape:
            raise StoreMismatchError(
                f"the mask store {p} holds masks of shape {have} (T, H, W) but this video is {shape}: "
                "it belongs to another video; open that video or choose another store path"
            )
        if fingerprint is not None and stored_fp is not None:
            a = {k: stored_fp.get(k) for k in ("shape", "dtype", "sampled_hash")}
            b = {k: fingerprint.get(k) for k in ("shape", "dtype", "sampled_hash")}
            if a != b:
                src = self._attrs.get("provenance", {}).get("source")
                raise StoreMismatchError(
                    f"the mask store {p} belongs to another video (fingerprint {a['sampled_hash']} "
                    f"{a['dtype']} {a['shape']}{', source ' + str(src) if src else ''}) than this one "
                    f"({b['sampled_hash']} {b['dtype']} {b['shape']}); it was not modified"
                )

    def flush_attrs(self) -> None:
        """Write the attributes (objects, references, undo, provenance) to the store."""
        self._forget_unused_scribbles()
        self.group.attrs[ATTR_KEY] = json.loads(json.dumps(self._attrs))

    def _forget_unused_scribbles(self) -> None:
        """Drop scribble sets that neither a reference nor an undo step refers to."""
        table = self._attrs["scribbles"]
        used = {r.get("scribbles") for r in self._attrs["references"].values()}
        for step in self._attrs["undo"]:
            used.update(r.get("scribbles") for r in step["state"]["references"].values())
        for key in [k for k in table if k not in used]:
            del table[key]

    # ------------------------------------------------------------------ state
    @property
    def attrs(self) -> dict:
        return self._attrs

    @property
    def objects(self) -> dict[int, dict]:
        return {int(k): v for k, v in self._attrs["objects"].items()}

    def ensure_object(self, object_id: int, parent: int | None = None) -> None:
        objs = self._attrs["objects"]
        key = str(int(object_id))
        if key not in objs and object_id > 0:
            objs[key] = {"name": f"object {object_id}", "colour": PALETTE[(object_id - 1) % len(PALETTE)],
                         "parent": parent}

    @property
    def references(self) -> dict[int, dict]:
        return {int(k): v for k, v in self._attrs["references"].items()}

    def set_reference(self, t: int, kind: str, scribbles: list[dict] | None = None,
                      keep_scribbles: bool = False) -> int:
        """Make frame ``t`` a reference of ``kind`` ("user" or "auto") with ``scribbles`` (the
        dicts of :meth:`Scribble.to_dict`), or with the scribbles it has when ``keep_scribbles``.
        Returns the new revision."""
        old = self._attrs["references"].get(str(int(t)), {}).get("scribbles")
        self._attrs["revision"] += 1
        rev = self._attrs["revision"]
        key = None
        if keep_scribbles:
            key = old
        elif scribbles:
            key = str(rev)
            self._attrs["scribbles"][key] = [_packed(d) for d in scribbles]
        self._attrs["references"][str(int(t))] = {"kind": kind, "revision": rev, "scribbles": key}
        return rev

    def reference_scribbles(self, t: int) -> list[dict]:
        """The scribbles of reference frame ``t`` (dicts of :meth:`Scribble.to_dict`); ``[]``
        when ``t`` is not a reference or has none."""
        key = self._attrs["references"].get(str(int(t)), {}).get("scribbles")
        return [_unpacked(d) for d in self._attrs["scribbles"].get(key, [])] if key is not None else []

    def remove_reference(self, t: int) -> None:
        self._attrs["references"].pop(str(int(t)), None)

    # ------------------------------------------------------------------ frames
    def read(self, t: int) -> np.ndarray:
        return np.asarray(self.labels[int(t)])

    def write(self, t: int, labels: np.ndarray, previous: np.ndarray | None = None) -> None:
        """Write frame ``t``; its former labels (or ``previous``, when the array on disk was
        already edited in place, e.g. by a brush) are kept for undo."""
        self.write_frames({int(t): (labels, previous)})

    def write_frames(self, frames: dict[int, tuple[np.ndarray, np.ndarray | None]]) -> None:
        """Write several frames at once: ``{t: (labels, previous labels or None)}``, each kept
        for undo as :meth:`write` does (None: the labels on disk are the previous ones).  Zarr's
        cost is per call, not per byte: renaming a proposal on 47 frames takes a third of the
        time of 47 single-frame calls."""
        if not frames:
            return
        ts = sorted(int(t) for t in frames)
        if self._attrs["undo"]:
            self._save_for_undo(self._attrs["undo"][-1], ts, frames)
        run = [ts[0]]  # contiguous frames are one zarr call
        for t in ts[1:] + [None]:
            if t is not None and t == run[-1] + 1:
                run.append(t)
                continue
            self.labels[run[0]:run[-1] + 1] = np.stack([np.asarray(frames[u][0], dtype=LABEL_DTYPE) for u in run])
            run = [t]

    def _save_for_undo(self, step: dict, ts: list[int], frames: dict) -> None:
        """Keep the previous labels of the frames ``ts`` (sorted) that ``step`` has not saved yet:
        one array for all of them; empty frames are only listed."""
        new = [t for t in ts if t not in step["frames"]]
        if not new:
            return
        before = {t: self.read(t) if frames[t][1] is None else np.asarray(frames[t][1], dtype=LABEL_DTYPE)
                  for t in new}
        keep = [t for t in new if before[t].any()]
        if keep:
            h, w = self.labels.shape[1:]
            batches = step.setdefault("batches", {})
            name = f"b{len(batches)}"
            self._undo_group(step["id"]).create_array(
                name, shape=(len(keep), h, w), chunks=(1, h, w), dtype=LABEL_DTYPE, fill_value=0,
                compressors=_compressors(), overwrite=True)[...] = np.stack([before[t] for t in keep])
            batches[name] = keep
        step.setdefault("empty", []).extend(t for t in new if t not in keep)  # (e.g. before the first propagation)
        cf = np.asarray(self.computed_from[new[0]:new[-1] + 1])
        for t in new:
            step["frames"].append(t)
            step.setdefault("computed_from", {})[str(t)] = cf[t - new[0]].tolist()

    # ------------------------------------------------------------------ undo
    def begin_step(self, action: str, t: int) -> None:
        """Start an undo step: remembers the state, then frames as they are first changed."""
        state = copy.deepcopy({"objects": self._attrs["objects"], "references": self._attrs["references"]})
        self._attrs["undo_counter"] += 1
        step = {"action": action, "t": int(t), "id": self._attrs["undo_counter"], "frames": [], "state": state}
        self._attrs["undo"].append(step)
        while len(self._attrs["undo"]) > self.max_undo:
            old = self._attrs["undo"].pop(0)
            self._drop_undo_arrays(old["id"])

    def _undo_group(self, step_id: int):
        return self.group.require_group(f"undo/{step_id}")

    def _drop_undo_arrays(self, step_id: int) -> None:
        if "undo" in self.group and str(step_id) in self.group["undo"]:
            del self.group["undo"][str(step_id)]

    def can_undo(self) -> bool:
        return bool(self._attrs["undo"])

    def undo(self) -> dict:
        """Revert the last step; returns it (action, t, frames restored)."""
        if not self._attrs["undo"]:
            raise RuntimeError("nothing to undo")
        step = self._attrs["undo"].pop()
        g = self._undo_group(step["id"])
        empty = set(step.get("empty", []))
        batched = {int(t): (name, i) for name, ts in step.get("batches", {}).items() for i, t in enumerate(ts)}
        for t in step["frames"]:  # one frame in memory at a time
            if int(t) in empty:
                self.labels[int(t)] = np.zeros(self.labels.shape[1:], LABEL_DTYPE)
            elif int(t) in batched:
                name, i = batched[int(t)]
                self.labels[int(t)] = np.asarray(g[name][i])
            else:  # a store written before batches: one array per frame
                self.labels[int(t)] = np.asarray(g[str(t)])
            self.computed_from[int(t)] = np.asarray(step["computed_from"][str(t)], dtype=np.int64)
        self._attrs["objects"] = step["state"]["objects"]
        self._attrs["references"] = step["state"]["references"]
        self._attrs["revision"] += 1
        self._drop_undo_arrays(step["id"])
        self.flush_attrs()
        return step


def _packed(stroke: dict) -> dict:
    """A scribble dict with its points as one "row,col row,col ..." string (2 decimals)."""
    pts = np.round(np.asarray(stroke["points"], dtype=float).reshape(-1, 2), 2)
    packed = {"object_id": int(stroke["object_id"]),
              "points": " ".join(f"{float(r)!r},{float(c)!r}" for r, c in pts)}
    width = stroke.get("width")
    if width is not None and np.any(np.asarray(width) > 0):  # a painted stroke's width (absent: a line)
        packed["width"] = (float(width) if np.ndim(width) == 0
                           else " ".join(f"{float(v)!r}" for v in np.round(np.asarray(width, dtype=float), 2)))
    return packed


def _unpacked(stroke: dict) -> dict:
    """Inverse of :func:`_packed`: points as a list of [row, col]."""
    pts = stroke["points"]
    if isinstance(pts, str):
        pts = [[float(v) for v in pair.split(",")] for pair in pts.split()]
    out = {"object_id": int(stroke["object_id"]), "points": pts}
    width = stroke.get("width")
    if width:
        out["width"] = [float(v) for v in width.split()] if isinstance(width, str) else width
    return out


def _upgraded(attrs: dict) -> dict:
    """Attributes of an older format in the current one (format 1 kept each reference's
    scribbles inside it, and inside every undo step's copy of it)."""
    if attrs.get("format", 1) >= 2:
        return attrs
    table: dict[str, list] = {}
    index: dict[str, str] = {}

    def move(refs: dict) -> None:
        for ref in refs.values():
            strokes = ref.get("scribbles") or []
            if not strokes:
                ref["scribbles"] = None
                continue
            text = json.dumps(strokes, sort_keys=True)
            if text not in index:  # the same strokes in several undo copies are stored once
                index[text] = f"v1-{len(index)}"
                table[index[text]] = [_packed(d) for d in strokes]
            ref["scribbles"] = index[text]

    move(attrs.get("references", {}))
    for step in attrs.get("undo", []):
        move(step.get("state", {}).get("references", {}))
    attrs["scribbles"] = table
    attrs["format"] = FORMAT_VERSION
    return attrs


def write_labels_store(path: str | os.PathLike, labels: Any, fingerprint: dict | None = None,
                       source: str | None = None) -> Path:
    """Save a (T, H, W) labels array as a new mask store (used by the napari writer).

    Refuses to overwrite anything that exists at ``path``.
    """
    p = Path(path)
    if p.exists():
        raise FileExistsError(f"{p} already exists; the mask store is not overwritten (choose a new path)")
    arr = labels
    if getattr(arr, "ndim", 0) == 2:
        arr = np.asarray(arr)[None]
    if getattr(arr, "ndim", 0) != 3:
        raise ValueError(f"labels to save must be (T, H, W) or (H, W), got shape {getattr(arr, 'shape', None)}")
    if np.issubdtype(np.dtype(arr.dtype), np.signedinteger):
        mins = [int(np.asarray(arr[t]).min()) for t in range(arr.shape[0])]
        if min(mins) < 0:
            raise ValueError("labels contain negative ids; object ids must be >= 0")
    store = MaskStore(p, *arr.shape, fingerprint=fingerprint, provenance={"source": source})
    ids: set[int] = set()
    for t in range(arr.shape[0]):
        frame = np.asarray(arr[t]).astype(LABEL_DTYPE)
        store.labels[t] = frame
        ids.update(int(i) for i in np.unique(frame) if i)
    for i in sorted(ids):
        store.ensure_object(i)
    store.flush_attrs()
    return p
