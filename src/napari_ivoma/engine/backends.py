"""Segmentation backends: one small protocol, a weight-free default.

A backend turns scribbles into masks on one frame (``scribbles_to_mask``, the CPSM step) and
keeps a per-video memory of confirmed masks (``new_memory``).  Everything else (control points,
motion, references, propagation, fusion, anomalies, storage) is the engine's own; a backend may
also carry ``mrgs_params`` (:class:`~napari_ivoma.engine.mrgs.MRGSParams`) to tune propagation,
and may replace propagation's fine segmentation (:func:`~napari_ivoma.engine.mrgs.refine_object`)
with a ``refine_mask`` method (see :class:`Backend`).

A learned backend (weights from a local file) implements the same methods and registers
itself with :func:`register_backend`; ``Session(frames, backend="name")`` then uses it.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend", "ClassicalBackend", "get_backend", "register_backend", "available_backends"]


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a segmentation backend."""

    name: str

    def new_memory(self) -> Any:
        """A fresh memory pool for one video (``add(t, image, labels)``, ``remove(t)``)."""

    def scribbles_to_mask(self, image: np.ndarray, scribbles: list, prior: np.ndarray | None,
                          new_ids: set[int] | None, memory: Any) -> np.ndarray:
        """CPSM: (H, W, C) float image + scribbles -> (H, W) uint32 labels.

        A backend whose method also takes a keyword ``motion`` receives the frame's own motion
        ((H, W, 4K) float32, :func:`~napari_ivoma.engine.motion.motion_features`; None for a
        one-frame video; a backend with ``uses_motion = False`` gets None without the engine
        computing it)."""

    def params_dict(self) -> dict:
        """Parameters, for provenance."""

    # Optional: a backend with a method
    #     prepare(image) -> object
    # does the per-frame work of scribbles_to_mask that does not depend on the strokes (an
    # image embedding, pixel features); the engine calls it ahead (Session.prepare, when the
    # user shows a frame) and passes the result back as scribbles_to_mask(..., prepared=...)
    # and, when it takes one, memory.add(..., prepared=...).
    #
    # Optional: a backend with a method
    #     refine_mask(t, image, box, warped, object_id) -> (h, w) probability or None
    # replaces propagation's fine segmentation: ``warped`` is the object's probability carried
    # to frame ``t`` by optical flow inside ``box`` = (r0, r1, c0, c1) of the (H, W, C) float
    # ``image``; return the refined probability in the same box, or None when the object is
    # gone.  Warping, bi-directional fusion, anomaly repair and merging stay the engine's.


class ClassicalBackend:
    """The default backend: no pretrained weights; appearance models learnt on the video."""

    name = "classical"

    def __init__(self, params: dict | None = None):
        from . import _tree_kernels
        from .cpsm import CPSMParams
        from .mrgs import MRGSParams

        _tree_kernels.warm_up()  # compiles the classifier's kernels while the user looks around
        params = dict(params or {})
        self.cpsm_params = _pick(CPSMParams, params)
        self.mrgs_params = _pick(MRGSParams, params)
        if params:
            raise ValueError(
                f"unknown engine parameter(s): {', '.join(sorted(params))}; known: "
                f"{', '.join(sorted(f.name for f in fields(CPSMParams)) + sorted(f.name for f in fields(MRGSParams)))}"
            )

    def new_memory(self):
        from .appearance import MemoryPool

        return MemoryPool()

    @property
    def uses_motion(self) -> bool:
        """Whether scribbles_to_mask looks at the frame's motion (the engine skips it if not)."""
        return self.cpsm_params.motion_veto > 0

    def prepare(self, image):
        """The per-frame work of ``scribbles_to_mask`` that does not depend on the strokes."""
        from .cpsm import prepare_frame

        return prepare_frame(image, self.cpsm_params)

    def scribbles_to_mask(self, image, scribbles, prior, new_ids, memory, motion=None, prepared=None):
        from .cpsm import scribbles_to_mask

        return scribbles_to_mask(image, scribbles, prior=prior, new_ids=new_ids, memory=memory,
                                 params=self.cpsm_params, motion=motion, prepared=prepared)

    def params_dict(self) -> dict:
        return {"cpsm": asdict(self.cpsm_params), "mrgs": asdict(self.mrgs_params)}


def _pick(cls, params: dict):
    """Build dataclass ``cls`` from the keys of ``params`` it knows (removing them); values cast."""
    kwargs = {}
    for f in fields(cls):
        if f.name in params:
            default = getattr(cls(), f.name)
            val = params.pop(f.name)
            if isinstance(default, bool) and isinstance(val, str):
                val = val.lower() in ("1", "true", "yes", "on")
            elif default is not None and not isinstance(val, type(default)):
                val = type(default)(val)
            kwargs[f.name] = val
    return cls(**kwargs)


_REGISTRY: dict[str, type] = {"classical": ClassicalBackend}


def register_backend(name: str, factory: type) -> None:
    """Register a backend class (called with ``params``) under ``name``."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(backend: str | Backend | None, params: dict | None = None) -> Backend:
    """A backend instance from a name (default ``"classical"``) or an instance."""
    if backend is None:
        backend = "classical"
    if isinstance(backend, str):
        if backend not in _REGISTRY:
            raise ValueError(f"unknown backend {backend!r}; available: {', '.join(available_backends())}")
        return _REGISTRY[backend](params)
    if params:
        raise ValueError("params are given to the backend's constructor; pass a backend name with params")
    return backend
