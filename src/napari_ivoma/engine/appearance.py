"""Appearance models for CPSM: multiscale pixel features, a small pixel classifier
and the memory pool of confirmed masks of a video.

Everything here is weight-free: the classifier is trained from scratch, in
well under a second, from the pixels under the user's control points (and the
confirmed masks stored in the :class:`MemoryPool`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import _tree_kernels

__all__ = ["pixel_features", "MemoryPool", "PixelClassifier", "robust_normalize"]

#: Gaussian scales (pixels) of the smoothed colour / intensity channels
COLOR_SIGMAS = (0.7, 1.5, 3.0, 6.0)
#: scales of gradient magnitude, Laplacian-of-Gaussian and local standard deviation
EDGE_SIGMAS = (1.0, 2.0, 4.0)
LOG_SIGMAS = (1.0, 2.0, 4.0, 8.0)
STD_SIGMAS = (2.0, 4.0, 8.0)
#: where :func:`pixel_features` of a colour frame keeps its colour at the finest scale (COLOR_SIGMAS[0])
FINEST_COLOUR = slice(0, 3)


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
    img = img.astype(np.float32, copy=False)
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or infinite values; map them to numbers first "
                         "(napari_ivoma.engine.io.to_float_image maps NaN to 0, as a Session does)")
    return img


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


def pixel_features(image: np.ndarray, channels: np.ndarray | None = None) -> np.ndarray:
    """Multiscale per-pixel features (colour, edges, blobs, texture).

    Parameters
    ----------
    image : (H, W, C) float32 in [0, 1], C = 1 or 3 (a 2-D array is taken as grey).
    channels : (H, W, C) float32, optional
        :func:`base_channels` of ``image``, when the caller has them already.

    Returns
    -------
    (H, W, F) float32. F = 22 for RGB: Gaussian-smoothed channels at
    ``COLOR_SIGMAS``, gradient magnitude of the lightness at ``EDGE_SIGMAS``,
    scale-normalised Laplacian of Gaussian at ``LOG_SIGMAS`` and local standard
    deviation at ``STD_SIGMAS``.  F = 1 for grey: the (stretched) intensity smoothed
    at ``COLOR_SIGMAS[0]``.  Grey frames are mostly fluorescence microscopy, where an
    object is what is brighter than its surroundings; coarse-scale features there
    make the model bleed a halo around every bright blob (measured: per-nucleus J
    0.51 with the 14 multiscale grey features, 0.87 with the intensity alone).
    Values are roughly O(1) with fixed scalings, so features of different frames of
    one video are comparable.
    """
    base = base_channels(image) if channels is None else channels
    if base.shape[2] == 1:
        return _blur(base, COLOR_SIGMAS[0]).reshape(base.shape[:2] + (1,)).astype(np.float32, copy=False)
    light = np.ascontiguousarray(base[..., 0])
    n_feat = 3 * len(COLOR_SIGMAS) + len(EDGE_SIGMAS) + len(LOG_SIGMAS) + len(STD_SIGMAS)
    out = np.empty(base.shape[:2] + (n_feat,), np.float32)
    j = 0
    for s in COLOR_SIGMAS:
        out[..., j : j + 3] = _blur(base, s)
        j += 3
    for s in EDGE_SIGMAS:
        sm = _blur(light, s)
        gx = cv2.Sobel(sm, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
        gy = cv2.Sobel(sm, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
        out[..., j] = np.sqrt(gx * gx + gy * gy) * (4.0 * s)  # not cv2.magnitude: its rounding depends on alignment
        j += 1
    for s in LOG_SIGMAS:
        sm = _blur(light, s)
        out[..., j] = cv2.Laplacian(sm, cv2.CV_32F, ksize=1) * (2.0 * s * s)
        j += 1
    sq = light * light
    for s in STD_SIGMAS:
        m = _blur(light, s)
        v = _blur(sq, s) - m * m
        out[..., j] = np.sqrt(np.maximum(v, 0.0)) * 4.0
        j += 1
    return out


# --------------------------------------------------------------------------- classifier


def _compiled() -> bool:
    """Whether the compiled tree kernels are ready (starting their compilation if not: the
    numpy code, which gives the same trees, runs meanwhile)."""
    if _tree_kernels.ready():
        return True
    _tree_kernels.warm_up()  # in the background; returns at once
    return False


class PixelClassifier:
    """Binary pixel classifier (object vs. background): extremely randomised trees.

    A small numpy implementation of extra-trees (random feature, random threshold
    between two random samples of the node, best of ``n_try`` by weighted Gini),
    grown level by level for all trees at once.  Axis-aligned random splits make the
    ensemble vote with every feature that separates the classes, so it generalises
    to pixels that resemble the samples in only some features (e.g. the rim of an
    object whose centre was scribbled).  Deterministic for a given ``seed``.

    Parameters
    ----------
    n_trees : int
    max_depth : int
    min_leaf : int
        A node with fewer samples than ``2 * min_leaf`` is not split.
    n_try : int or None
        Candidate splits per node (default ``sqrt(F)``).
    """

    def __init__(
        self, n_trees: int = 16, max_depth: int = 9, min_leaf: int = 3, n_try: int | None = None, seed: int = 0
    ):
        self.n_trees = n_trees
        self.max_depth = max_depth
        self.min_leaf = min_leaf
        self.n_try = n_try
        self.seed = seed
        self._feat: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> PixelClassifier:
        """Train on features ``x`` (N, F), labels ``y`` in {0, 1}, optional sample weights."""
        x = np.ascontiguousarray(x, np.float32)
        y = np.asarray(y, np.float64)
        if len(x) == 0 or y.min() == y.max():
            raise ValueError("PixelClassifier needs samples of both classes")
        w = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64).copy()
        for c in (0.0, 1.0):  # balance: each class gets half of the total weight
            sel = y == c
            w[sel] *= 0.5 / max(float(w[sel].sum()), 1e-12)
        grow = self._grow_compiled if _compiled() else self._grow
        self._feat, self._thr, self._leaf = grow(x, y, w, np.random.default_rng(self.seed))
        self._nf = x.shape[1]
        return self

    def _grow_compiled(self, x: np.ndarray, y: np.ndarray, w: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_grow` by the compiled kernel: the same random draws, made here in the same
        order, give the same trees bit for bit."""
        n, f = x.shape
        k_try = self._k_try(f)
        tries = [t for level in self._draws(rng, f) for t in level]
        draws = tuple(np.concatenate([t[i] for t in tries]) for i in range(4))
        # contiguous arrays and plain ints: the types the kernels were compiled for (others
        # would make numba compile a new version in the middle of a stroke)
        feat, thr, end_tot, end_pos = _tree_kernels.grow(
            np.ascontiguousarray(x.T), np.ascontiguousarray(y, np.float64), np.ascontiguousarray(w, np.float64),
            int(self.n_trees), int(self.max_depth), int(self.min_leaf), int(k_try), draws)
        return feat, thr, self._leaf_probabilities(end_tot, end_pos, n)

    def _k_try(self, n_features: int) -> int:
        return self.n_try or max(1, int(round(np.sqrt(n_features))))

    def _draws(self, rng: np.random.Generator, n_features: int) -> list[list[tuple[np.ndarray, ...]]]:
        """The random draws of every level and try, in the order both growers use them: per
        node, a feature and three uniforms (the two samples a threshold lies between, and
        where between them)."""
        out = []
        for d in range(self.max_depth):
            n_grp = self.n_trees * 2**d
            out.append([(rng.integers(0, n_features, n_grp), rng.random(n_grp), rng.random(n_grp),
                         rng.random(n_grp)) for _ in range(self._k_try(n_features))])
        return out

    def _leaf_probabilities(self, end_tot: np.ndarray, end_pos: np.ndarray, n: int) -> np.ndarray:
        prior_w = 0.5 / max(n, 1)  # a little smoothing toward 0.5
        return ((end_pos + 0.5 * prior_w) / (end_tot + prior_w)).astype(np.float32).reshape(self.n_trees, -1)

    def _grow(self, x: np.ndarray, y: np.ndarray, w: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All trees grown level by level at once (row = (tree, sample)): split features,
        thresholds and leaf probabilities."""
        n, f = x.shape
        t_n, depth = self.n_trees, self.max_depth
        draws = self._draws(rng, f)
        n_nodes = 2 ** (depth + 1) - 1
        feat = np.zeros((t_n, n_nodes), np.int32)
        thr = np.full((t_n, n_nodes), np.inf, np.float32)
        flat_x = x.ravel()
        # small integer types keep the gathers and the (radix) sorts fast
        itype = np.int32 if n * f < 2**31 and t_n * n < 2**31 and t_n * 2**depth < 2**30 else np.int64
        ktype = np.uint16 if t_n * 2 ** max(depth - 1, 0) <= np.iinfo(np.uint16).max else itype
        samp_f = np.tile(np.arange(n, dtype=itype) * f, t_n)  # offset of each row's features
        ww = np.tile(w, t_n)
        wy = np.tile(w * y, t_n)
        key = np.repeat(np.arange(t_n, dtype=itype), n)  # group = (tree, node within the level)
        # rows of nodes that can never split again (too small or pure) leave the arrays; their
        # weight goes straight to the leaf they end in (leaves pass samples to the left child)
        end_tot = np.zeros(t_n * 2**depth)
        end_pos = np.zeros(t_n * 2**depth)
        for d in range(depth):
            n_lvl = 2**d
            n_grp = t_n * n_lvl
            cnt = np.bincount(key, minlength=n_grp)
            tot = np.bincount(key, ww, minlength=n_grp)
            pos = np.bincount(key, wy, minlength=n_grp)
            final = (cnt < 2 * self.min_leaf) | (pos <= 0) | (pos >= tot)
            drop = final[key]
            if len(drop) and drop.mean() > 0.1:  # (no rows left: nothing to drop)
                shift = depth - d
                np.add.at(end_tot, np.flatnonzero(final) << shift, tot[final])
                np.add.at(end_pos, np.flatnonzero(final) << shift, pos[final])
                keep = ~drop
                key, samp_f, ww, wy = key[keep], samp_f[keep], ww[keep], wy[keep]
                cnt[final], tot[final], pos[final] = 0, 0.0, 0.0
            order = np.argsort(key.astype(ktype, copy=False), kind="stable").astype(itype, copy=False)
            start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
            last = max(len(order) - 1, 0)
            key2 = 2 * key
            best_score = np.full(n_grp, np.inf)
            best_f = np.zeros(n_grp, np.int32)
            best_t = np.full(n_grp, np.inf, np.float32)
            for fs, ra, rb, u in draws[d]:
                if len(order):
                    a = samp_f[order[np.minimum(start + (ra * cnt).astype(np.int64), last)]]
                    b = samp_f[order[np.minimum(start + (rb * cnt).astype(np.int64), last)]]
                    ts = (flat_x[a + fs] * u + flat_x[b + fs] * (1 - u)).astype(np.float32)
                else:
                    ts = np.zeros(n_grp, np.float32)
                left = flat_x[samp_f + fs.astype(itype)[key]] <= ts[key]
                k2 = key2 + left
                wl = np.bincount(k2, ww, minlength=2 * n_grp)[1::2]
                pl = np.bincount(k2, wy, minlength=2 * n_grp)[1::2]
                wr, pr = tot - wl, pos - pl
                with np.errstate(invalid="ignore", divide="ignore"):
                    score = pl * (wl - pl) / wl + pr * (wr - pr) / wr  # weighted Gini / 2
                score[(wl <= 0) | (wr <= 0)] = np.inf
                better = score < best_score
                best_score[better] = score[better]
                best_f[better] = fs[better]
                best_t[better] = ts[better]
            leaf = final | ~np.isfinite(best_score)
            best_t[leaf] = np.inf
            best_f[leaf] = 0
            base = n_lvl - 1
            feat[:, base : base + n_lvl] = best_f.reshape(t_n, n_lvl)
            thr[:, base : base + n_lvl] = best_t.reshape(t_n, n_lvl)
            right = flat_x[samp_f + best_f.astype(itype)[key]] > best_t[key]
            key = key2 + right  # tree * 2 n_lvl + 2 node + right: the next level's group
        n_lvl = 2**depth
        end_tot += np.bincount(key, ww, minlength=t_n * n_lvl)
        end_pos += np.bincount(key, wy, minlength=t_n * n_lvl)
        return feat, thr, self._leaf_probabilities(end_tot, end_pos, n)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of class 1 for features ``x`` (..., F); same leading shape out."""
        if self._feat is None:
            raise RuntimeError("PixelClassifier.predict_proba called before fit")
        shape = x.shape[:-1]
        flat = np.ascontiguousarray(x, np.float32).reshape(-1)
        m = len(flat) // self._nf
        if _compiled():
            return _tree_kernels.predict(flat.reshape(m, self._nf), self._feat, self._thr, self._leaf,
                                         int(self.max_depth)).reshape(shape)
        out = np.empty(m, np.float32)
        nf, depth = self._nf, self.max_depth
        first = 2**depth - 1
        for c0 in range(0, m, 1 << 15):  # chunks keep the gathers in cache
            c1 = min(m, c0 + (1 << 15))
            rowbase = np.arange(c0, c1, dtype=np.int32) * nf if c1 * nf < 2**31 else np.arange(c0, c1) * nf
            acc = np.zeros(c1 - c0, np.float32)
            for t in range(self.n_trees):
                ft, tt = self._feat[t], self._thr[t]
                idx = np.zeros(c1 - c0, np.int32)
                for _ in range(depth):
                    go = flat[rowbase + ft[idx]] > tt[idx]
                    idx = 2 * idx + 1 + go
                acc += self._leaf[t][idx - first]
            out[c0:c1] = acc / self.n_trees
        return out.reshape(shape)


# --------------------------------------------------------------------------- memory pool


@dataclass
class _FrameSamples:
    labels: np.ndarray  # (N,) uint32 label of each sample
    feats: np.ndarray  # (N, F) float32
    areas: dict[int, int] = field(default_factory=dict)  # object id -> its pixels on the frame


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
    _frames: dict[int, _FrameSamples | Future] = field(default_factory=dict, repr=False)
    _worker: ThreadPoolExecutor | None = field(default=None, init=False, repr=False, compare=False)

    def add(self, t: int, image: np.ndarray, labels: np.ndarray, prepared: object | None = None) -> None:
        """Store samples of confirmed frame ``t``; re-adding ``t`` replaces it.

        The features are computed in a background thread (the caller returns at once; the
        next use of the pool waits for them), or taken from ``prepared.features`` when that
        holds :func:`pixel_features` of ``image`` at full resolution (CPSM's prepared frame)."""
        img = _check_image(image)
        lab = np.asarray(labels)
        if lab.shape != img.shape[:2]:
            raise ValueError(f"labels shape {lab.shape} does not match image shape {img.shape[:2]}")
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="ivoma-memory")
        lab = lab.astype(np.uint32, copy=True)  # the caller may change its array afterwards
        self._frames.pop(int(t), None)
        feats = getattr(prepared, "features", None)
        if feats is not None and feats.shape[:2] == img.shape[:2]:
            self._frames[int(t)] = self._worker.submit(self._sample, feats, lab, int(t))
        else:
            self._frames[int(t)] = self._worker.submit(self._sample_frame, img.copy(), lab, int(t))
        while len(self._frames) > self.max_frames:
            self._frames.pop(next(iter(self._frames)))

    def _sample_frame(self, image: np.ndarray, labels: np.ndarray, t: int) -> _FrameSamples:
        return self._sample(pixel_features(image), labels, t)

    def _ready(self) -> dict[int, _FrameSamples]:
        """The stored frames, waiting for features still being computed."""
        for t, v in list(self._frames.items()):
            if isinstance(v, Future):
                self._frames[t] = v.result()
        return self._frames

    def remove(self, t: int) -> None:
        """Forget frame ``t`` (no error when it is absent)."""
        self._frames.pop(int(t), None)

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, t: int) -> bool:
        return int(t) in self._frames

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_frames"] = dict(self._ready())
        state["_worker"] = None
        return state

    @property
    def frames(self) -> list[int]:
        return sorted(self._frames)

    def object_ids(self) -> set[int]:
        ids: set[int] = set()
        for fs in self._ready().values():
            ids.update(int(v) for v in np.unique(fs.labels))
        ids.discard(0)
        return ids

    def object_area(self, oid: int) -> float | None:
        """Median area (pixels) of object ``oid`` over the stored frames that hold it (None if none)."""
        areas = [a[oid] for a in (getattr(fs, "areas", {}) for fs in self._ready().values()) if oid in a]
        return float(np.median(areas)) if areas else None

    def samples(self, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All stored samples as ``(features (N, F), labels (N,))``, optionally without frame ``exclude``."""
        parts = [fs for t, fs in self._ready().items() if t != exclude]
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
        ids, counts = np.unique(labels, return_counts=True)
        for oid in ids:
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
        areas = {int(k): int(c) for k, c in zip(ids, counts) if k != 0}
        return _FrameSamples(np.concatenate(out_l), np.concatenate(out_f), areas)
