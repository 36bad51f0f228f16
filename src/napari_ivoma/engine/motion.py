"""Motion between frames: dense optical flow (OpenCV DIS), cached and shared by all objects."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["FlowCache", "to_gray_u8"]

_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}
_FIXED = 16.0  # cached flows: int16 in 1/16 pixel (+-2047 px)


def to_gray_u8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float image in [0, 1] -> (H, W) uint8 grey for optical flow."""
    g = image.mean(axis=2) if image.shape[2] != 3 else image @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.ascontiguousarray(np.clip(g * 255.0 + 0.5, 0, 255).astype(np.uint8))


class FlowCache:
    """Optical flow between frame pairs, computed once and kept in a bounded LRU cache.

    Parameters
    ----------
    gray : callable(t) -> (H, W) uint8
        Grey frame provider.
    preset : {"ultrafast", "fast", "medium"}
        OpenCV DIS preset.
    max_bytes : int
        Cache bound; flows are stored as int16 in 1/16 pixel (float16 conversion is slow on CPUs).
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
                return self._cache[key].astype(np.float32) * np.float32(1.0 / _FIXED)
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
        packed = np.clip(f * _FIXED, -32767, 32767).astype(np.int16)
        with self._lock:
            self._cache[key] = packed
            self._bytes += packed.nbytes
            while self._bytes > self.max_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.nbytes
        return f
