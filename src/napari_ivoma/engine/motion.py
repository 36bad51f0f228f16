"""Motion between frames: dense optical flow (OpenCV DIS), cached and shared by all objects."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["FlowCache", "to_gray_u8", "warp"]

_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


def to_gray_u8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float image in [0, 1] -> (H, W) uint8 grey for optical flow."""
    g = image.mean(axis=2) if image.shape[2] != 3 else image @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.ascontiguousarray(np.clip(g * 255.0 + 0.5, 0, 255).astype(np.uint8))


def warp(src: np.ndarray, flow: np.ndarray, box: tuple[int, int, int, int] | None = None,
         interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Backward-warp ``src`` with ``flow`` (dst pixel p samples src at p + flow[p]).

    Parameters
    ----------
    src : (H, W) float32 array
    flow : (H, W, 2) float32, (dx, dy) from the destination frame to the source frame
    box : (r0, r1, c0, c1), optional
        Only this window of the destination is computed (the rest is 0).
    """
    h, w = flow.shape[:2]
    r0, r1, c0, c1 = box if box is not None else (0, h, 0, w)
    out = np.zeros((h, w), np.float32)
    if r1 <= r0 or c1 <= c0:
        return out
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    f = flow[r0:r1, c0:c1]
    out[r0:r1, c0:c1] = cv2.remap(src.astype(np.float32, copy=False), xs + f[..., 0], ys + f[..., 1],
                                  interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


class FlowCache:
    """Optical flow between frame pairs, computed once and kept in a bounded LRU cache.

    Parameters
    ----------
    gray : callable(t) -> (H, W) uint8
        Grey frame provider.
    preset : {"ultrafast", "fast", "medium"}
        OpenCV DIS preset.
    max_bytes : int
        Cache bound; flows are stored as float16.
    scale : float
        Flow is computed on frames resized by this factor (then resized back), trading a little
        precision (the band cut refines outlines anyway) for speed; never below ``min_size``
        pixels on the longer side.
    """

    min_size = 400

    def __init__(self, gray: Callable[[int], np.ndarray], preset: str = "medium",
                 max_bytes: int = 256 * 2**20, scale: float = 1.0):
        self._gray = gray
        self.preset = preset
        self.scale = float(scale)
        self.max_bytes = max_bytes
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self.computed = 0

    def _dis(self):
        dis = getattr(self._local, "dis", None)
        if dis is None:
            dis = cv2.DISOpticalFlow_create(_PRESETS[self.preset])
            self._local.dis = dis
        return dis

    def flow(self, dst: int, src: int) -> np.ndarray:
        """Flow from frame ``dst`` to frame ``src`` ((H, W, 2) float32, dx/dy)."""
        key = (int(dst), int(src))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key].astype(np.float32)
        a, b = self._gray(dst), self._gray(src)
        h, w = a.shape
        scale = min(1.0, max(self.scale, self.min_size / max(h, w)))
        if scale < 1.0:
            size = (max(8, round(w * scale)), max(8, round(h * scale)))
            small = self._dis().calc(cv2.resize(a, size, interpolation=cv2.INTER_AREA),
                                     cv2.resize(b, size, interpolation=cv2.INTER_AREA), None)
            f = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
            f[..., 0] *= w / size[0]
            f[..., 1] *= h / size[1]
        else:
            f = self._dis().calc(a, b, None)
        self.computed += 1
        f16 = f.astype(np.float16)
        with self._lock:
            self._cache[key] = f16
            self._bytes += f16.nbytes
            while self._bytes > self.max_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.nbytes
        return f
