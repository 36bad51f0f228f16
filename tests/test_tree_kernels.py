"""The compiled tree kernels grow the same trees, bit for bit, as the classifier's numpy code."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ivoma.engine import _tree_kernels
from napari_ivoma.engine.appearance import PixelClassifier

pytestmark = pytest.mark.skipif(not _tree_kernels.AVAILABLE, reason="numba is not installed (or IVOMA_NO_JIT=1)")


def noisy_problem(n: int, f: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1 % f] ** 2 + rng.normal(size=n) > 0.3).astype(np.float64)
    w = rng.random(n)
    return x, y, w


@pytest.mark.parametrize("n, f, seed", [(4000, 30, 0), (300, 7, 1), (20, 5, 2), (5, 3, 3)])
def test_compiled_trees_equal_numpy_trees(n, f, seed):
    assert _tree_kernels.warm_up(wait=True)
    x, y, w = noisy_problem(n, f, seed)
    w_bal = w.copy()
    for c in (0.0, 1.0):
        w_bal[y == c] *= 0.5 / max(w_bal[y == c].sum(), 1e-12)
    clf = PixelClassifier(n_trees=6, seed=seed)
    ref = clf._grow(x, y, w_bal, np.random.default_rng(seed))
    got = clf._grow_compiled(x, y, w_bal, np.random.default_rng(seed))
    for a, b in zip(ref, got):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    if n >= 20:  # the trees split: a nontrivial problem, not two empty forests agreeing
        assert np.isfinite(ref[1]).sum() > 6
    else:  # too few samples to split: every tree is one leaf
        assert not np.isfinite(ref[1]).any()


def test_compiled_prediction_equals_numpy_prediction(monkeypatch):
    assert _tree_kernels.warm_up(wait=True)
    x, y, w = noisy_problem(3000, 12, 4)
    clf = PixelClassifier(seed=4).fit(x, y, w)
    query = np.random.default_rng(5).normal(size=(20_000, 12)).astype(np.float32)
    fast = clf.predict_proba(query)
    monkeypatch.setattr(_tree_kernels, "_READY", type("NotReady", (), {"is_set": staticmethod(lambda: False)})())
    monkeypatch.setattr(_tree_kernels, "warm_up", lambda wait=False: False)
    slow = clf.predict_proba(query)
    np.testing.assert_array_equal(fast, slow)
    assert 0.3 < float((fast > 0.5).mean()) < 0.9  # it separates the classes
    acc = float(((clf.predict_proba(x) > 0.5) == (y > 0.5)).mean())
    assert acc > 0.8
