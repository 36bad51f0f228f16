"""Appearance models for CPSM: multiscale pixel features, a small pixel classifier
and the memory pool of confirmed masks of a video.

Everything here is weight-free: the classifier is trained from scratch, in
well under a second, from the pixels under the user's control points (and the
confirmed masks stored in the :class:`MemoryPool`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["pixel_features", "MemoryPool", "PixelClassifier", "robust_normalize"]

#: Gaussian scales (pixels) of the smoothed colour / intensity channels
COLOR_SIGMAS = (0.7, 1.5, 3.0, 6.0)
#: scales of gradient magnitude, Laplacian-of-Gaussian and local standard deviation
EDGE_SIGMAS = (1.0, 2.0, 4.0)
LOG_SIGMAS = (1.0, 2.0, 4.0, 8.0)
STD_SIGMAS = (2.0, 4.0, 8.0)


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(
            f"image must be (H, W), (H, W, 1) or (H, W, 3), got shape {np.shape(image)}"
        )
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"image is too small: {img.shape[:2]}")
    return img.astype(np.float32, copy=False)


def robust_normalize(channel: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    """Stretch one channel so that its ``low``/``high`` percentiles map to 0/1.

    Makes low-contrast microscopy (e.g. 16-bit data rescaled to [0, 1]) usable.
    A constant channel maps to zeros.
    """
    sub = channel[:: max(1, channel.shape[0] // 256), :: max(1, channel.shape[1] // 256)]
    lo, hi = np.percentile(sub, [low, high])
    if hi - lo < 1e-6:
        lo, hi = float(channel.min()), float(channel.max())
    if hi - lo < 1e-6:
        return np.zeros_like(channel, dtype=np.float32)
    return ((channel - lo) / (hi - lo)).astype(np.float32)


def base_channels(image: np.ndarray) -> np.ndarray:
    """Perceptual channels, roughly in [0, 1]: Lab for RGB, stretched intensity for grey."""
    img = _check_image(image)
    if img.shape[2] == 3:
        lab = cv2.cvtColor(np.clip(img, 0.0, 1.0), cv2.COLOR_RGB2Lab)
        lab[..., 0] /= 100.0
        lab[..., 1:] /= 100.0
        return lab
    return robust_normalize(img[..., 0])[..., None]


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def pixel_features(image: np.ndarray) -> np.ndarray:
    """Multiscale per-pixel features (colour, edges, blobs, texture).

    Parameters
    ----------
    image : (H, W, C) float32 in [0, 1], C = 1 or 3 (a 2-D array is taken as grey).

    Returns
    -------
    (H, W, F) float32. F = 22 for RGB, 14 for grey: Gaussian-smoothed channels at
    ``COLOR_SIGMAS``, gradient magnitude of the lightness at ``EDGE_SIGMAS``,
    scale-normalised Laplacian of Gaussian at ``LOG_SIGMAS`` and local standard
    deviation at ``STD_SIGMAS``.  Values are roughly O(1) with fixed scalings, so
    features of different frames of one video are comparable.
    """
    base = base_channels(image)
    light = np.ascontiguousarray(base[..., 0])
    feats: list[np.ndarray] = []
    for s in COLOR_SIGMAS:
        sm = _blur(base, s)
        if sm.ndim == 2:
            sm = sm[..., None]
        feats.extend(sm[..., c] for c in range(sm.shape[2]))
    for s in EDGE_SIGMAS:
        sm = _blur(light, s)
        gx = cv2.Sobel(sm, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
        gy = cv2.Sobel(sm, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
        feats.append(np.sqrt(gx * gx + gy * gy) * (4.0 * s))
    for s in LOG_SIGMAS:
        sm = _blur(light, s)
        feats.append(cv2.Laplacian(sm, cv2.CV_32F, ksize=1) * (2.0 * s * s))
    sq = light * light
    for s in STD_SIGMAS:
        m = _blur(light, s)
        v = _blur(sq, s) - m * m
        feats.append(np.sqrt(np.maximum(v, 0.0)) * 4.0)
    return np.stack(feats, axis=-1).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- classifier


class PixelClassifier:
    """Binary pixel classifier (object vs. background), trained from scratch in milliseconds.

    Kernel logistic regression: features are standardised, mapped by random Fourier
    features (an approximation of a Gaussian kernel) and a weighted, L2-regularised
    logistic regression is fitted by a few Newton (IRLS) steps.  Deterministic.

    Parameters
    ----------
    n_features : int
        Number of random Fourier features.
    gamma : float
        Kernel width: the Gaussian kernel is ``exp(-gamma * |x - y|^2 / F)`` on standardised features.
    l2 : float
        Ridge penalty of the logistic regression.
    newton_steps : int
        IRLS iterations.
    """

    def __init__(
        self, n_features: int = 128, gamma: float = 1.0, l2: float = 1e-2, newton_steps: int = 5, seed: int = 0,
        min_relevance: float = 0.1,
    ):
        self.min_relevance = min_relevance
        self.n_features = n_features
        self.gamma = gamma
        self.l2 = l2
        self.newton_steps = newton_steps
        self.seed = seed
        self._coef: np.ndarray | None = None

    def _map(self, x: np.ndarray) -> np.ndarray:
        z = (x - self._mean) * self._scale
        z = z @ self._w
        z += self._b
        np.cos(z, out=z)
        return z

    def fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> PixelClassifier:
        """Train on features ``x`` (N, F), labels ``y`` in {0, 1}, optional sample weights."""
        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.float64)
        if len(x) == 0 or y.min() == y.max():
            raise ValueError("PixelClassifier needs samples of both classes")
        w = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64).copy()
        for c in (0.0, 1.0):  # balance: each class gets half of the total weight
            sel = y == c
            w[sel] *= 0.5 / max(float(w[sel].sum()), 1e-12)
        w *= len(x)
        f = x.shape[1]
        rng = np.random.default_rng(self.seed)
        self._mean = x.mean(0)
        # relevance weighting (a cheap ARD): features that separate the classes get a
        # narrower kernel, irrelevant ones are nearly ignored -> generalises to unseen
        # combinations of irrelevant features (e.g. object rims when only the centre was scribbled)
        sw = w / w.sum()
        m1 = (sw[y == 1, None] * x[y == 1]).sum(0) / sw[y == 1].sum()
        m0 = (sw[y == 0, None] * x[y == 0]).sum(0) / sw[y == 0].sum()
        v1 = (sw[y == 1, None] * (x[y == 1] - m1) ** 2).sum(0) / sw[y == 1].sum()
        v0 = (sw[y == 0, None] * (x[y == 0] - m0) ** 2).sum(0) / sw[y == 0].sum()
        fisher = (m1 - m0) ** 2 / (v1 + v0 + 1e-4 * (x.var(0) + 1e-6))
        rel = np.sqrt(fisher / max(fisher.sum(), 1e-12) * f) + self.min_relevance
        self._scale = (rel / (x.std(0) + 1e-3)).astype(np.float32)
        self._w = (rng.standard_normal((f, self.n_features)) * np.sqrt(2.0 * self.gamma / f)).astype(np.float32)
        self._b = rng.uniform(0, 2 * np.pi, self.n_features).astype(np.float32)
        phi = np.concatenate([self._map(x), np.ones((len(x), 1), np.float32)], 1)
        coef = np.zeros(phi.shape[1])
        reg = self.l2 * len(x) * np.eye(phi.shape[1])
        reg[-1, -1] = 1e-8
        for _ in range(self.newton_steps):
            p = 1.0 / (1.0 + np.exp(-np.clip(phi @ coef, -30, 30)))
            s = w * np.maximum(p * (1 - p), 1e-6)
            grad = phi.T @ (w * (p - y)) + reg @ coef
            hess = (phi * s[:, None].astype(np.float32)).T @ phi + reg
            coef -= np.linalg.solve(hess, grad)
        self._coef = coef.astype(np.float32)
        return self

    def predict_proba(self, x: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
        """Probability of class 1 for features ``x`` (..., F); same leading shape out."""
        if self._coef is None:
            raise RuntimeError("PixelClassifier.predict_proba called before fit")
        shape = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        out = np.empty(len(flat), np.float32)
        for i in range(0, len(flat), chunk):
            z = self._map(flat[i : i + chunk]) @ self._coef[:-1] + self._coef[-1]
            out[i : i + chunk] = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        return out.reshape(shape)


# --------------------------------------------------------------------------- memory pool


@dataclass
class _FrameSamples:
    labels: np.ndarray  # (N,) uint32 label of each sample
    feats: np.ndarray  # (N, F) float32


@dataclass
class MemoryPool:
    """Global memory pool of confirmed masks of one video (self-reference refinement).

    For every confirmed frame a bounded random sample of pixel features is kept
    per label (object interiors, object borders and background near objects),
    so memory stays small however many frames are added.  CPSM adds these
    samples to the training set of its appearance model.

    Parameters
    ----------
    per_object : int
        Samples kept per object per frame.
    per_background : int
        Background samples kept per frame.
    max_frames : int
        At most this many frames are kept (the oldest added is dropped first).
    """

    per_object: int = 400
    per_background: int = 1200
    max_frames: int = 12
    seed: int = 0
    _frames: dict[int, _FrameSamples] = field(default_factory=dict, repr=False)

    def add(self, t: int, image: np.ndarray, labels: np.ndarray) -> None:
        """Store samples of confirmed frame ``t``; re-adding ``t`` replaces it."""
        img = _check_image(image)
        lab = np.asarray(labels)
        if lab.shape != img.shape[:2]:
            raise ValueError(f"labels shape {lab.shape} does not match image shape {img.shape[:2]}")
        feats = pixel_features(img)
        self._frames.pop(int(t), None)
        self._frames[int(t)] = self._sample(feats, lab.astype(np.uint32, copy=False), int(t))
        while len(self._frames) > self.max_frames:
            self._frames.pop(next(iter(self._frames)))

    def remove(self, t: int) -> None:
        """Forget frame ``t`` (no error when it is absent)."""
        self._frames.pop(int(t), None)

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, t: int) -> bool:
        return int(t) in self._frames

    @property
    def frames(self) -> list[int]:
        return sorted(self._frames)

    def object_ids(self) -> set[int]:
        ids: set[int] = set()
        for fs in self._frames.values():
            ids.update(int(v) for v in np.unique(fs.labels))
        ids.discard(0)
        return ids

    def samples(self, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All stored samples as ``(features (N, F), labels (N,))``, optionally without frame ``exclude``."""
        parts = [fs for t, fs in self._frames.items() if t != exclude]
        if not parts:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.uint32)
        nf = {p.feats.shape[1] for p in parts}
        if len(nf) > 1:
            raise ValueError("MemoryPool holds frames with different numbers of channels")
        return np.concatenate([p.feats for p in parts]), np.concatenate([p.labels for p in parts])

    def _sample(self, feats: np.ndarray, labels: np.ndarray, t: int) -> _FrameSamples:
        rng = np.random.default_rng(self.seed + t)
        out_l: list[np.ndarray] = []
        out_f: list[np.ndarray] = []
        fg = labels > 0
        near = cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=15) > 0
        for oid in np.unique(labels):
            sel = np.flatnonzero(labels.ravel() == oid)
            n = self.per_object if oid != 0 else self.per_background
            if oid == 0 and fg.any():
                # half of the background samples close to objects (the informative ones)
                close = np.flatnonzero((near & ~fg).ravel())
                pick = [rng.choice(close, min(n // 2, len(close)), replace=False)] if len(close) else []
                pick.append(rng.choice(sel, min(n - n // 2, len(sel)), replace=False))
                sel = np.unique(np.concatenate(pick))
            elif len(sel) > n:
                sel = rng.choice(sel, n, replace=False)
            out_l.append(np.full(len(sel), oid, np.uint32))
            out_f.append(feats.reshape(-1, feats.shape[-1])[sel])
        return _FrameSamples(np.concatenate(out_l), np.concatenate(out_f))
