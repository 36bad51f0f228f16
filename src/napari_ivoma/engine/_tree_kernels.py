"""Compiled kernels of :class:`~napari_ivoma.engine.appearance.PixelClassifier` (numba).

The same computation as the classifier's numpy code, written as loops that numba compiles
(once per machine: the machine code is cached on disk).  They reproduce the numpy code bit
for bit: the same random draws (made by the caller, in the same order), the same
summation order of every weighted count, the same float32/float64 roundings.  Trees and
probabilities are therefore identical with or without numba; only the time differs
(extra-trees fit ~5x, prediction ~2x faster on a 2-core laptop CPU).

``AVAILABLE`` is False when numba cannot be imported or ``IVOMA_NO_JIT=1`` is set; the
classifier then runs its numpy code.  Compiling takes a few seconds the first time on a
machine (then the disk cache loads in ~0.4 s): :func:`warm_up` does it in a background
thread, and until :func:`ready` the classifier runs its numpy code, so no stroke ever
waits for the compiler and results never depend on which code ran.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:  # pragma: no cover - exercised through AVAILABLE
    if os.environ.get("IVOMA_NO_JIT", "") not in ("", "0"):
        raise ImportError("disabled by IVOMA_NO_JIT")
    from numba import njit

    AVAILABLE = True
except ImportError:  # pragma: no cover - numba missing: the numpy code runs
    AVAILABLE = False

    def njit(*args, **kwargs):  # noqa: D103 - a stand-in so that the module imports
        def wrap(fn):
            return fn

        return wrap


@njit(cache=True, nogil=True)
def grow_trees(xt, y, w, n_trees, depth, min_leaf, k_try, fs_all, ra_all, rb_all, u_all,
               feat, thr, end_tot, end_pos, t0, t1):  # pragma: no cover
    """Grow the trees (see ``PixelClassifier._grow``, whose result this reproduces) on the
    (F, N) transposed samples ``xt``, each tree on its own (in parallel).

    ``fs_all`` / ``ra_all`` / ``rb_all`` / ``u_all``: the random draws of every level and
    try, concatenated (level d, try k: ``n_trees * 2**d`` values, tree-major), as the numpy
    code draws them.  Returns the split features, thresholds and the weight and positive
    weight ending in each leaf, written for trees ``t0 .. t1 - 1`` into ``feat`` / ``thr``
    (n_trees, 2**(depth + 1) - 1; zeros and inf) and ``end_tot`` / ``end_pos`` (n_trees,
    2**depth; zeros).  Trees are independent: callers grow disjoint ranges in threads.

    Each node's samples are kept in sample order (stable partitions), so every weighted sum
    is added in the numpy code's order.  A node that can never split (too small or pure)
    passes all its samples to its leftmost leaf in numpy; here its sums go there at once.
    """
    f, n = xt.shape  # features by sample: a node's samples read one feature's row
    n_leaf = 2**depth
    wy = w * y
    for t in range(t0, t1):
        idx = np.arange(n).astype(np.int32)
        tmp = np.empty(n, np.int32)
        lo = np.zeros(n_leaf, np.int64)  # the level's nodes: samples idx[lo[q]:hi[q]]
        hi = np.zeros(n_leaf, np.int64)
        hi[0] = n
        nlo = np.zeros(n_leaf, np.int64)
        nhi = np.zeros(n_leaf, np.int64)
        ts = np.zeros(k_try, np.float32)
        wl = np.zeros(k_try)
        pl = np.zeros(k_try)
        off = 0
        for d in range(depth):
            n_lvl = 2**d
            n_grp = n_trees * n_lvl
            shift = depth - d
            for q in range(n_lvl):
                s0, s1 = lo[q], hi[q]
                c_g = s1 - s0
                g = t * n_lvl + q
                tot = 0.0
                pos = 0.0
                for j in range(s0, s1):
                    tot += w[idx[j]]
                    pos += wy[idx[j]]
                node = n_lvl - 1 + q
                if c_g < 2 * min_leaf or pos <= 0 or pos >= tot:  # never splits: its leftmost leaf
                    end_tot[t, q << shift] += tot
                    end_pos[t, q << shift] += pos
                    nlo[2 * q], nhi[2 * q] = s0, s0  # both children empty
                    nlo[2 * q + 1], nhi[2 * q + 1] = s0, s0
                    continue
                for k in range(k_try):
                    h = off + k * n_grp + g
                    fk = fs_all[h]
                    ia = idx[min(s0 + np.int64(ra_all[h] * c_g), s1 - 1)]
                    ib = idx[min(s0 + np.int64(rb_all[h] * c_g), s1 - 1)]
                    ts[k] = np.float32(np.float64(xt[fk, ia]) * u_all[h] + np.float64(xt[fk, ib]) * (1.0 - u_all[h]))
                wl[:] = 0.0
                pl[:] = 0.0
                for j in range(s0, s1):
                    sr = idx[j]
                    wr_, yr_ = w[sr], wy[sr]
                    for k in range(k_try):  # branch-free: adding 0.0 leaves a sum unchanged
                        c = np.float64(xt[fs_all[off + k * n_grp + g], sr] <= ts[k])
                        wl[k] += c * wr_
                        pl[k] += c * yr_
                best = np.inf
                bf = 0
                bt = np.float32(np.inf)
                for k in range(k_try):
                    wr = tot - wl[k]
                    pr = pos - pl[k]
                    if wl[k] <= 0 or wr <= 0:
                        continue  # score inf: never better
                    score = pl[k] * (wl[k] - pl[k]) / wl[k] + pr * (wr - pr) / wr
                    if score < best:
                        best = score
                        bf = fs_all[off + k * n_grp + g]
                        bt = ts[k]
                feat[t, node] = bf
                thr[t, node] = bt
                # stable partition: left samples, then right ones, each in sample order
                nl = s0
                nr = 0
                for j in range(s0, s1):
                    sr = idx[j]
                    if xt[bf, sr] > bt:
                        tmp[nr] = sr
                        nr += 1
                    else:
                        idx[nl] = sr
                        nl += 1
                for j in range(nr):
                    idx[nl + j] = tmp[j]
                nlo[2 * q], nhi[2 * q] = s0, nl
                nlo[2 * q + 1], nhi[2 * q + 1] = nl, s1
            lo[: 2 * n_lvl] = nlo[: 2 * n_lvl]
            hi[: 2 * n_lvl] = nhi[: 2 * n_lvl]
            off += k_try * n_grp
        for q in range(n_leaf):
            tot = 0.0
            pos = 0.0
            for j in range(lo[q], hi[q]):
                tot += w[idx[j]]
                pos += wy[idx[j]]
            end_tot[t, q] += tot
            end_pos[t, q] += pos


@njit(cache=True, nogil=True)
def predict_trees(x, feat, thr, leaf, depth, out, i0, i1):  # pragma: no cover
    """Mean leaf probability over the trees for rows ``i0 .. i1 - 1`` of ``x`` (M, F)
    float32, written into ``out`` (M,) float32."""
    n_trees = feat.shape[0]
    first = 2**depth - 1
    scale = np.float32(n_trees)
    for c0 in range(i0, i1, 4096):  # a block of pixels, tree by tree: their descents overlap
        c1 = min(i1, c0 + 4096)
        acc = np.zeros(c1 - c0, np.float32)
        for t in range(n_trees):
            ft, tt, lt = feat[t], thr[t], leaf[t]
            for i in range(c0, c1):
                idx = 0
                for _ in range(depth):
                    idx = 2 * idx + 1 + np.int64(x[i, ft[idx]] > tt[idx])  # branch-free
                acc[i - c0] += lt[idx - first]
        for i in range(c0, c1):
            out[i] = acc[i - c0] / scale


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="ivoma-trees")
        return _POOL


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _run(jobs: list) -> None:
    """Run kernel calls ``(fn, args)`` on the pool (they release the GIL), the last one here."""
    futures = [_pool().submit(fn, *args) for fn, args in jobs[:-1]]
    fn, args = jobs[-1]
    fn(*args)
    for fut in futures:
        fut.result()


def grow(xt: np.ndarray, y: np.ndarray, w: np.ndarray, n_trees: int, depth: int, min_leaf: int, k_try: int,
         draws: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`grow_trees` over all trees, split across threads."""
    feat = np.zeros((n_trees, 2 ** (depth + 1) - 1), np.int32)
    thr = np.full(feat.shape, np.inf, np.float32)
    end_tot = np.zeros((n_trees, 2**depth))
    end_pos = np.zeros((n_trees, 2**depth))
    parts = _split(n_trees, min(_workers(), n_trees) if xt.shape[1] * n_trees >= 20_000 else 1)
    _run([(grow_trees, (xt, y, w, n_trees, depth, min_leaf, k_try, *draws, feat, thr, end_tot, end_pos, a, b))
          for a, b in parts])
    return feat, thr, end_tot.ravel(), end_pos.ravel()


def predict(x: np.ndarray, feat: np.ndarray, thr: np.ndarray, leaf: np.ndarray, depth: int) -> np.ndarray:
    """:func:`predict_trees` over all rows of ``x`` (M, F), split across threads."""
    m = x.shape[0]
    out = np.empty(m, np.float32)
    if m:
        parts = _split(m, min(_workers(), max(1, m // 8192)))
        _run([(predict_trees, (x, feat, thr, leaf, depth, out, a, b)) for a, b in parts])
    return out


_READY = threading.Event()
_WARM_LOCK = threading.Lock()
_WARM_THREAD: threading.Thread | None = None
_log = logging.getLogger(__name__)


def ready() -> bool:
    """Whether the compiled kernels can be called without waiting for the compiler."""
    return _READY.is_set()


def warm_up(wait: bool = False) -> bool:
    """Compile the kernels (or load them from numba's disk cache) in a background thread,
    once per process; ``wait=True`` blocks until done.  Returns :func:`ready`."""
    global _WARM_THREAD
    if not AVAILABLE:
        return False
    with _WARM_LOCK:
        if _WARM_THREAD is None:
            _WARM_THREAD = threading.Thread(target=_compile, name="ivoma-jit", daemon=True)
            _WARM_THREAD.start()
        thread = _WARM_THREAD
    if wait:
        thread.join()
    return ready()


def _compile() -> None:
    try:
        rng = np.random.default_rng(0)
        x = rng.random((64, 3), dtype=np.float32)
        y = (x[:, 0] > 0.5).astype(np.float64)
        w = np.full(64, 1.0 / 64)
        n_grp = 2 * (1 + 2)
        draws = (rng.integers(0, 3, n_grp), rng.random(n_grp), rng.random(n_grp), rng.random(n_grp))
        feat, thr, _, end_pos = grow(np.ascontiguousarray(x.T), y, w, 2, 2, 3, 1, draws)
        predict(x, feat, thr, end_pos.reshape(2, 4).astype(np.float32), 2)
    except Exception as exc:  # pragma: no cover - a broken numba install: the numpy code stays
        _log.warning("compiled tree kernels unavailable (%s); using the numpy code", exc)
        return
    _READY.set()
