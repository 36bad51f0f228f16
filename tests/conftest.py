"""Shared fixtures: small generated clips with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _texture(rng, shape, sigma, lo, hi):
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    n = (n - n.min()) / (np.ptp(n) + 1e-9)
    return lo + (hi - lo) * n


def moving_objects_clip(n_frames: int = 16, h: int = 96, w: int = 128, seed: int = 0,
                        leave: bool = False):
    """Two textured ellipses moving and deforming over a textured background.

    Object 1 (warm, fine texture) moves right 2 px/frame and breathes; object 2 (cool, coarse
    texture) moves down-left.  With ``leave=True`` object 1 moves fast enough to leave the frame
    on the right and come back.  Returns (frames uint8 (T,H,W,3), labels uint32 (T,H,W)).
    """
    rng = np.random.default_rng(seed)
    bg = np.stack([_texture(rng, (h, w), 3, 60, 140), _texture(rng, (h, w), 3, 90, 160),
                   _texture(rng, (h, w), 3, 40, 110)], axis=2)
    tex1 = np.stack([_texture(rng, (h, w), 1.5, 190, 250), _texture(rng, (h, w), 1.5, 90, 150),
                     _texture(rng, (h, w), 1.5, 40, 80)], axis=2)
    tex2 = np.stack([_texture(rng, (h, w), 2.5, 30, 70), _texture(rng, (h, w), 2.5, 60, 110),
                     _texture(rng, (h, w), 2.5, 170, 230)], axis=2)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.zeros((n_frames, h, w, 3), np.uint8)
    labels = np.zeros((n_frames, h, w), np.uint32)
    for t in range(n_frames):
        img = bg.copy()
        if leave:
            phase = np.sin(np.pi * t / (n_frames - 1))
            c1 = (0.35 * h, 0.3 * w + phase * 0.95 * w)
        else:
            c1 = (0.35 * h + 0.5 * t, 0.25 * w + 2.0 * t)
        a1, b1 = 0.16 * h * (1 + 0.15 * np.sin(t / 3)), 0.13 * w * (1 - 0.1 * np.sin(t / 3))
        c2 = (0.55 * h + 1.2 * t, 0.75 * w - 1.5 * t)
        a2, b2 = 0.2 * h, 0.1 * w * (1 + 0.2 * np.cos(t / 4))
        for oid, (cy, cx), (a, b), tex in ((2, c2, (a2, b2), tex2), (1, c1, (a1, b1), tex1)):
            m = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1
            shift = (int(round(cy - 0.4 * h)), int(round(cx - 0.4 * w)))
            img[m] = np.roll(tex, shift, axis=(0, 1))[m]  # texture moves with the object
            labels[t][m] = oid
        frames[t] = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    return frames, labels


def cells_clip(n_frames: int = 14, h: int = 90, w: int = 120, seed: int = 1):
    """Grey fluorescence-like clip: cells 1 and 2 drift; cell 3 enters from the right edge at
    frame 3 and moves left.  Returns (frames uint16 (T,H,W), labels uint32 (T,H,W))."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.zeros((n_frames, h, w), np.uint16)
    labels = np.zeros((n_frames, h, w), np.uint32)
    for t in range(n_frames):
        img = rng.normal(400, 30, (h, w))
        cells = [(1, 25 + 0.5 * t, 25 + t, 10, 2600), (2, 60, 50 + 0.3 * t, 11, 1900)]
        if t >= 3:
            cells.append((3, 45 - 0.4 * t, w + 8 - 4 * (t - 3) - 12, 9, 2200))
        for oid, cy, cx, r, amp in cells:
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            img += amp * np.exp(-d2 / (2 * (1.2 * r) ** 2)) * (d2 <= r * r)
            labels[t][d2 <= r * r] = oid
        frames[t] = np.clip(img, 0, 65535).astype(np.uint16)
    return frames, labels


@pytest.fixture
def clip():
    return moving_objects_clip()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)
