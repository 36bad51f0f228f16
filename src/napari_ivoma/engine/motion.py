"""Motion between frames: dense optical flow (OpenCV DIS), cached and shared by all objects."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["FLOW_PRESETS", "FlowCache", "to_gray_u8", "residual_motion", "coarse_residual_motion", "camera_homography",
           "colour_change", "motion_features", "MOTION_CHANNELS"]

#: channels of :func:`motion_features` per neighbouring frame: residual dx, dy, speed, colour change
MOTION_CHANNELS = 4

#: the camera's motion is fitted on a grid of flow vectors every ``_FIT_GRID`` px, on the flow
#: shrunk by ``_FIT_SCALE`` (the residual is smooth at that resolution)
_FIT_GRID, _FIT_SCALE = 8, 0.25

#: OpenCV DIS optical-flow presets by name
FLOW_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}
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
        self._inputs: OrderedDict[tuple[int, tuple[int, int]], np.ndarray] = OrderedDict()  # DIS's grey frames

    def _dis(self):
        dis = getattr(self._local, "dis", None)
        if dis is None:
            dis = cv2.DISOpticalFlow_create(FLOW_PRESETS[self.preset])
            self._local.dis = dis
        return dis

    def _input(self, t: int, size: tuple[int, int] | None) -> np.ndarray:
        """Frame ``t`` in grey, shrunk to ``size`` (None: as it is); the last few are kept
        (a frame is one end of the flow to each of its neighbours)."""
        key = (int(t), size)
        with self._lock:
            if key in self._inputs:
                self._inputs.move_to_end(key)
                return self._inputs[key]
        if size is None:
            img = self._gray(t)
        else:
            img = cv2.resize(self._input(t, None), size, interpolation=cv2.INTER_AREA)
        with self._lock:
            self._inputs[key] = img
            while len(self._inputs) > 6:
                self._inputs.popitem(last=False)
        return img

    def flow(self, dst: int, src: int) -> np.ndarray:
        """Flow from frame ``dst`` to frame ``src`` ((H, W, 2) float32, dx/dy)."""
        key = (int(dst), int(src))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key].astype(np.float32) * np.float32(1.0 / _FIXED)
        a = self._input(dst, None)
        h, w = a.shape
        scale = min(1.0, max(self.scale, self.min_size / max(h, w)))
        if scale < 1.0:
            size = (max(8, round(w * scale)), max(8, round(h * scale)))
            small = self._dis().calc(self._input(dst, size), self._input(src, size), None)
            f = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
            f[..., 0] *= w / size[0]
            f[..., 1] *= h / size[1]
        else:
            f = self._dis().calc(a, self._input(src, None), None)
        self.computed += 1
        packed = np.clip(f * _FIXED, -32767, 32767).astype(np.int16)
        with self._lock:
            self._cache[key] = packed
            self._bytes += packed.nbytes
            while self._bytes > self.max_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.nbytes
        return f


def residual_motion(flow: np.ndarray, grid: int = _FIT_GRID, scale: float = _FIT_SCALE) -> np.ndarray:
    """Motion of every pixel relative to the camera: ``flow`` minus the homography that best
    explains it (RANSAC on a grid of flow vectors), as (H, W, 2) float32 dx/dy.

    Objects that move on their own stand out; a panning or zooming camera does not.  The fit
    is made on the flow shrunk by ``scale`` (the residual is smooth at that resolution).
    """
    h, w = flow.shape[:2]
    return cv2.resize(coarse_residual_motion(flow, grid, scale), (w, h), interpolation=cv2.INTER_LINEAR)


def _fit_small(flow: np.ndarray, grid: int, scale: float):
    """(flow shrunk by ``scale``, in shrunk pixels; the homography that best explains it there or None)."""
    h, w = flow.shape[:2]
    hs, ws = max(8, round(h * scale)), max(8, round(w * scale))
    small = cv2.resize(flow, (ws, hs), interpolation=cv2.INTER_AREA) * np.float32(scale)
    yy, xx = np.mgrid[0:hs:max(1, grid // 4), 0:ws:max(1, grid // 4)]
    src = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
    dst = src + small[yy.ravel(), xx.ravel()]
    hom = None
    if len(src) >= 8:
        hom, _ = cv2.findHomography(src, dst, cv2.RANSAC, 0.5)
    return small, hom


def _residual_of_fit(small: np.ndarray, hom: np.ndarray | None, scale: float) -> np.ndarray:
    """The shrunk flow minus the camera's motion fitted to it (:func:`_fit_small`), in
    full-resolution pixels."""
    hs, ws = small.shape[:2]
    if hom is None:
        med = np.median(small.reshape(-1, 2), axis=0)
        res = small - med
    else:
        ys, xs = np.mgrid[0:hs, 0:ws].astype(np.float32)
        pts = np.stack([xs, ys], -1).reshape(-1, 1, 2)
        pred = cv2.perspectiveTransform(pts, hom).reshape(hs, ws, 2)
        res = np.stack([xs, ys], -1) + small - pred
    return (res / np.float32(scale)).astype(np.float32)


def _homography_of_fit(small: np.ndarray, hom: np.ndarray | None, scale: float) -> np.ndarray:
    """The camera's motion fitted by :func:`_fit_small` as a full-resolution 3x3 homography (a
    shift by the median flow when no homography fitted)."""
    if hom is None:
        dx, dy = np.median(small.reshape(-1, 2), axis=0) / np.float32(scale)
        return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
    s = np.diag([scale, scale, 1.0])
    return np.linalg.inv(s) @ hom @ s


def coarse_residual_motion(flow: np.ndarray, grid: int = _FIT_GRID, scale: float = _FIT_SCALE) -> np.ndarray:
    """:func:`residual_motion` at the reduced resolution of the fit ((h, w, 2), in full-resolution
    pixels; resize it to the region needed)."""
    return _residual_of_fit(*_fit_small(flow, grid, scale), scale)


def camera_homography(flow: np.ndarray, grid: int = _FIT_GRID, scale: float = _FIT_SCALE) -> np.ndarray:
    """The camera's motion in ``flow`` (frame -> neighbour): the 3x3 homography that best explains
    it (RANSAC, as :func:`residual_motion`), mapping the frame's pixel coordinates (x, y) to the
    neighbour's; a shift by the median flow when no homography fits."""
    return _homography_of_fit(*_fit_small(flow, grid, scale), scale)


def colour_change(image: np.ndarray, neighbour: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """How much every pixel of ``image`` changes in ``neighbour`` once the camera's motion
    (``homography``, image -> neighbour coordinates, see :func:`camera_homography`) is undone:
    mean absolute difference over the channels of both images smoothed by 1 px, (H, W) float32
    in the images' units.

    Still ground barely changes; a part that moves on its own over it does.  Unlike the optical
    flow, which smears a moving part's motion over its surroundings, this is sharp to a pixel
    (but the ground a part uncovers or covers changes too: compare with both neighbouring
    frames)."""
    h, w = image.shape[:2]
    nb = np.ascontiguousarray(neighbour, np.float32)
    warped = cv2.warpPerspective(nb, homography, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE).reshape(h, w, -1)
    a = cv2.GaussianBlur(np.ascontiguousarray(image, np.float32), (0, 0), 1.0).reshape(h, w, -1)
    b = cv2.GaussianBlur(warped, (0, 0), 1.0).reshape(h, w, -1)
    return np.abs(a - b).mean(axis=2).astype(np.float32)


def motion_features(flows: list[np.ndarray], image: np.ndarray | None = None,
                    neighbours: list[np.ndarray] | None = None) -> np.ndarray:
    """Pixel features of a frame's own motion, from its flows to the neighbouring frames.

    Per flow, :data:`MOTION_CHANNELS` channels: the residual dx, dy and speed (see
    :func:`residual_motion`, smoothed) and the colour change against that neighbouring frame
    (:func:`colour_change` of ``image`` and the neighbour; NaN, unknown, when the images are not
    given).  Returns (H, W, 4 * len(flows)) float32."""
    if (image is None) != (neighbours is None) or (neighbours is not None and len(neighbours) != len(flows)):
        raise ValueError("motion_features needs the frame and one neighbouring frame per flow, or neither")
    feats = []
    scale = _FIT_SCALE
    for k, f in enumerate(flows):
        h, w = f.shape[:2]
        small, hom = _fit_small(f, _FIT_GRID, scale)  # (the camera's motion, fitted once for both)
        res = cv2.resize(_residual_of_fit(small, hom, scale), (w, h), interpolation=cv2.INTER_LINEAR)
        r = cv2.GaussianBlur(res, (0, 0), 2.0)
        change = (np.full((h, w), np.nan, np.float32) if neighbours is None
                  else colour_change(image, neighbours[k], _homography_of_fit(small, hom, scale)))
        feats += [r[..., 0], r[..., 1], np.sqrt((r * r).sum(axis=2)), change]
    return np.ascontiguousarray(np.stack(feats, axis=2).astype(np.float32))
