"""Synthetic sample clips with exact ground truth.

The project ships no third-party frames.  These generators draw two small clips
deterministically (same ``seed`` -> same bytes) together with their ground-truth
label images, so the plugin, the tests and the benchmark have data that is
always available:

``natural``  ``make_natural_clip``: RGB uint8 "outdoor" clip.  Three textured,
    deforming objects on a textured, slowly panning background; one object passes
    in front of another (partial occlusion, labels show the front object), the
    light dims in the middle of the clip and partly recovers, and one object leaves
    the frame on the right and comes back.
``nuclei``  ``make_nuclei_clip``: uint16 fluorescence-like time-lapse.  Textured,
    blob-like nuclei drift on a ~1000-count background with a few hundred counts of
    contrast, Poisson (shot) and Gaussian (read) noise, a blurred PSF, a touching
    pair, mild photobleaching, and one division (the parent id ends, two daughters
    with new ids start next to each other).  ``nuclei_lineage`` gives the lineage
    table (CTC ``man_track.txt`` style: ``{label: (begin, end, parent)}``).

``write_clip`` writes a clip as ``frames/00000.png ...`` + ``masks/00000.png ...``
(the layout of the development data), and ``ensure_sample_clips`` keeps a cached
copy of both clips on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import gaussian_filter, map_coordinates

__all__ = [
    "make_natural_clip",
    "make_nuclei_clip",
    "nuclei_lineage",
    "SAMPLE_CLIPS",
    "NATURAL_IDS",
    "natural_brightness",
    "write_clip",
    "write_lineage",
    "read_clip",
    "ensure_sample_clips",
    "default_samples_root",
    "GENERATOR_VERSION",
]

#: bump whenever the generated pixels change, so cached copies get regenerated
GENERATOR_VERSION = 2  # 2: caches made before the generator's final version (session 1) were never refreshed

#: object ids of ``make_natural_clip`` (depth order back -> front: striped, plaid, spotted)
NATURAL_IDS = {"spotted": 1, "striped": 2, "plaid": 3}

_MIN_FRAMES = 8
_MIN_SIDE = 64
_STAMP = "ivoma_sample.json"


# =========================================================================== helpers
def _check_args(n_frames: int, shape: tuple[int, int]) -> tuple[int, int, int]:
    """Validate ``n_frames`` / ``shape`` and return them as plain ints."""
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)):
        raise TypeError(f"n_frames must be an integer, got {n_frames!r}")
    if n_frames < _MIN_FRAMES:
        raise ValueError(f"n_frames must be >= {_MIN_FRAMES}, got {n_frames}")
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width), got {shape!r}") from None
    if h < _MIN_SIDE or w < _MIN_SIDE:
        raise ValueError(f"shape must be at least ({_MIN_SIDE}, {_MIN_SIDE}), got {(h, w)}")
    return int(n_frames), h, w


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent random stream ``stream`` of ``seed`` (streams do not disturb each other)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stream])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean, unit std, float32 (wraps around)."""
    noise = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    noise -= noise.mean()
    noise /= noise.std() + 1e-12
    return noise.astype(np.float32)


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _path(keys_u: list[float], keys_v: list[float], u: np.ndarray) -> np.ndarray:
    """Smooth, overshoot-free interpolation of keyframes (monotone cubic)."""
    return PchipInterpolator(keys_u, keys_v)(u)


@dataclass
class _Shape:
    """A star-shaped blob: r(theta) = radius * (1 + sum a_k cos(k (theta - phase_k)))."""

    row: float
    col: float
    radius: float
    angle: float = 0.0
    harmonics: list[tuple[int, float, float]] = field(default_factory=list)  # (k, a_k, phase_k)

    def max_radius(self) -> float:
        return self.radius * (1.0 + sum(abs(a) for _, a, _ in self.harmonics))


@dataclass
class _Footprint:
    """Pixels of one shape's bounding box in object coordinates."""

    rows: slice
    cols: slice
    edge_dist: np.ndarray  # approx. distance inside the boundary in px (negative outside)
    u: np.ndarray  # normalised radius, 0 at the centre, 1 on the boundary
    tex_y: np.ndarray  # canonical (undeformed, unrotated) texture coordinates
    tex_x: np.ndarray


def _footprint(s: _Shape, h: int, w: int, margin: float = 2.0, texture: bool = True
               ) -> _Footprint | None:
    """Geometry of shape ``s`` on an ``h`` x ``w`` frame (None when entirely outside)."""
    reach = s.max_radius() + margin
    r0, r1 = max(int(np.floor(s.row - reach)), 0), min(int(np.ceil(s.row + reach)) + 1, h)
    c0, c1 = max(int(np.floor(s.col - reach)), 0), min(int(np.ceil(s.col + reach)) + 1, w)
    if r0 >= r1 or c0 >= c1:
        return None
    dy = np.arange(r0, r1, dtype=np.float32)[:, None] - np.float32(s.row)
    dx = np.arange(c0, c1, dtype=np.float32)[None, :] - np.float32(s.col)
    cos_a, sin_a = np.float32(np.cos(s.angle)), np.float32(np.sin(s.angle))
    y_obj = dy * cos_a - dx * sin_a  # pixel offsets in the object's own frame
    x_obj = dx * cos_a + dy * sin_a
    rho = np.sqrt(y_obj * y_obj + x_obj * x_obj)
    theta = np.arctan2(y_obj, x_obj)
    edge = np.ones_like(rho)
    for k, a, phase in s.harmonics:
        edge += np.float32(a) * np.cos(k * (theta - np.float32(phase)))
    edge *= np.float32(s.radius)
    u = rho / edge
    scale = np.float32(s.radius) / edge if texture else None
    return _Footprint(
        rows=slice(r0, r1),
        cols=slice(c0, c1),
        edge_dist=edge - rho,
        u=u,
        tex_y=y_obj * scale if texture else y_obj,
        tex_x=x_obj * scale if texture else x_obj,
    )


def _sample(texture: np.ndarray, fp: _Footprint) -> np.ndarray:
    """Bilinear lookup of a centred texture patch (P, P) or (P, P, C) at the footprint."""
    c = (texture.shape[0] - 1) / 2.0
    coords = np.stack([fp.tex_y + c, fp.tex_x + c])
    if texture.ndim == 2:
        return map_coordinates(texture, coords, order=1, mode="reflect")
    return np.stack(
        [map_coordinates(texture[..., i], coords, order=1, mode="reflect") for i in
         range(texture.shape[-1])],
        axis=-1,
    )


# =========================================================================== natural clip
def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two RGB colours by weight ``t`` (H, W) -> (H, W, 3)."""
    t = t[..., None]
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def _natural_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grass-and-earth ground: blotches, clumps, fine grain and small pebbles."""
    blotch = _smoothstep(
        0.5 + 0.3 * _smooth_noise(rng, (h, w), 14) + 0.15 * _smooth_noise(rng, (h, w), 5)
    )
    ground = _mix([0.30, 0.42, 0.20], [0.52, 0.42, 0.28], blotch)
    clumps = _smooth_noise(rng, (h, w), 3.0)
    grain = _smooth_noise(rng, (h, w), 0.7)
    ground *= (1.0 + 0.10 * clumps + 0.07 * grain)[..., None]
    pebbles = _smooth_noise(rng, (h, w), 1.6) > 2.3
    ground[pebbles] = ground[pebbles] * 0.4 + np.float32(0.45)
    rows = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    ground *= (1.0 - 0.12 * rows)[..., None]  # light from the top
    return ground


def _spotted_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Orange fur with dark, irregular spots."""
    fur = _smooth_noise(rng, (size, size), 0.8)
    spots = _smooth_noise(rng, (size, size), 2.2)
    tex = _mix([0.88, 0.60, 0.26], [0.97, 0.80, 0.50], _smoothstep(0.5 + 0.2 * fur))
    rim = np.exp(-((spots - 1.0) ** 2) / 0.05)
    tex = _mix(tex, [0.55, 0.33, 0.12], _smoothstep((spots - 0.7) / 0.3) * 0.7)
    tex = _mix(tex, [0.16, 0.10, 0.05], np.clip(rim, 0, 1) * 0.9)
    return tex


def _striped_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Wavy navy / off-white stripes."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = 2.2 * _smooth_noise(rng, (size, size), 7)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (0.8 * x + 0.35 * y) / 10.0 + warp)
    tex = _mix([0.10, 0.13, 0.32], [0.86, 0.88, 0.93], _smoothstep(1.6 * stripes - 0.3))
    tex *= (1.0 + 0.05 * _smooth_noise(rng, (size, size), 0.8))[..., None]
    return tex


def _plaid_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Red tartan: dark bands, thin yellow lines, woven grain."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    tex = np.empty((size, size, 3), np.float32)
    tex[:] = [0.72, 0.13, 0.16]
    bands = ((x % 14) < 4) | ((y % 14) < 4)
    tex[bands] = [0.30, 0.08, 0.12]
    lines = (np.abs((x % 14) - 9) < 0.8) | (np.abs((y % 14) - 9) < 0.8)
    tex[lines] = [0.92, 0.80, 0.25]
    weave = 0.5 + 0.5 * np.sin(np.pi * (x + y) / 1.5)
    tex *= (0.9 + 0.1 * weave + 0.04 * _smooth_noise(rng, (size, size), 0.7))[..., None]
    return tex


def _natural_shapes(n_frames: int, h: int, w: int) -> dict[int, list[_Shape]]:
    """Per-frame geometry of the three objects (keyframed, scaled to the frame size)."""
    u = np.linspace(0.0, 1.0, n_frames)
    m = min(h, w)
    two_pi = 2 * np.pi
    shapes: dict[int, list[_Shape]] = {}

    # spotted: wanders right, leaves the frame completely, comes back from the right
    r1 = 0.135 * m
    out = w + 1.8 * r1
    row1 = _path([0, 0.22, 0.36, 0.52, 0.70, 1.0], [0.40 * h, 0.34 * h, 0.30 * h, 0.44 * h,
                                                     0.52 * h, 0.40 * h], u)
    col1 = _path([0, 0.22, 0.36, 0.52, 0.70, 1.0], [0.22 * w, 0.78 * w, out, out, 0.72 * w,
                                                     0.33 * w], u)
    shapes[NATURAL_IDS["spotted"]] = [
        _Shape(row1[i], col1[i], r1, angle=0.15 + 0.5 * np.sin(np.pi * ui),
               harmonics=[(2, 0.24 + 0.10 * np.sin(two_pi * 2.0 * ui), 0.0),
                          (3, 0.08 * np.sin(two_pi * 1.3 * ui + 0.5), 0.4 * ui),
                          (1, 0.06 * np.sin(two_pi * 3.0 * ui), 1.0)])
        for i, ui in enumerate(u)
    ]

    # striped: large, slow, squashes and stretches; stays at the back
    r2 = 0.165 * m
    row2 = _path([0, 0.5, 1.0], [0.66 * h, 0.63 * h, 0.66 * h], u)
    col2 = _path([0, 0.5, 1.0], [0.30 * w, 0.45 * w, 0.58 * w], u)
    shapes[NATURAL_IDS["striped"]] = [
        _Shape(row2[i], col2[i], r2, angle=-0.3 + 0.25 * ui,
               harmonics=[(2, 0.18 + 0.12 * np.sin(two_pi * 1.5 * ui), 0.0),
                          (4, 0.05 * np.cos(two_pi * 2.0 * ui), 0.3),
                          (3, 0.05 * np.sin(two_pi * ui), 2.0 * ui)])
        for i, ui in enumerate(u)
    ]

    # plaid: crosses in front of the striped object from bottom-left to the right
    r3 = 0.115 * m
    row3 = _path([0, 0.5, 1.0], [0.80 * h, 0.66 * h, 0.58 * h], u)
    col3 = _path([0, 0.5, 1.0], [0.10 * w, 0.45 * w, 0.86 * w], u)
    shapes[NATURAL_IDS["plaid"]] = [
        _Shape(row3[i], col3[i], r3, angle=1.2 * ui,
               harmonics=[(2, 0.12 + 0.08 * np.sin(two_pi * 2.5 * ui + 1.0), 0.0),
                          (5, 0.04 * np.sin(two_pi * 2.0 * ui), 0.0),
                          (1, 0.05 * np.cos(two_pi * 1.5 * ui), 0.5)])
        for i, ui in enumerate(u)
    ]
    return shapes


def natural_brightness(n_frames: int) -> np.ndarray:
    """Global light level per frame of ``make_natural_clip``: 1 -> 0.6 (mid clip) -> 0.8."""
    u = np.linspace(0.0, 1.0, n_frames)
    return _path([0, 0.3, 0.6, 0.8, 1.0], [1.0, 1.0, 0.6, 0.6, 0.8], u)


def make_natural_clip(
    n_frames: int = 40, shape: tuple[int, int] = (240, 320), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Natural-looking RGB clip with three deforming, textured objects.

    Parameters
    ----------
    n_frames : int
        Number of frames (>= 8).
    shape : (int, int)
        Frame (height, width), each >= 64.
    seed : int
        Seed of the textures and the sensor noise; same seed -> identical arrays.

    Returns
    -------
    frames : (T, H, W, 3) uint8
    labels : (T, H, W) uint32
        0 background, ids from ``NATURAL_IDS`` (1 spotted, 2 striped, 3 plaid);
        where objects overlap the label is the front object.

    Notes
    -----
    Depth order back to front: striped (2), plaid (3), spotted (1).  The plaid
    object crosses the striped one in mid clip; the spotted object leaves the
    frame to the right at about 30 % of the clip and re-enters at about 60 %;
    the light dims from 1.0 to 0.6 between 30 % and 60 % and recovers to 0.8
    (``natural_brightness``); the background pans slowly.  Object trajectories
    are fixed (scaled to ``shape``); ``seed`` changes textures and noise.
    """
    n_frames, h, w = _check_args(n_frames, shape)
    rng_tex, rng_noise = _rng(seed, 1), _rng(seed, 2)
    pad = max(4, int(0.06 * min(h, w)))
    background = _natural_background(rng_tex, h + pad, w + pad)
    shapes = _natural_shapes(n_frames, h, w)
    tex_size = int(2 * 1.6 * 0.165 * min(h, w)) + 5
    textures = {
        NATURAL_IDS["spotted"]: _spotted_texture(rng_tex, tex_size),
        NATURAL_IDS["striped"]: _striped_texture(rng_tex, tex_size),
        NATURAL_IDS["plaid"]: _plaid_texture(rng_tex, tex_size),
    }
    depth = [NATURAL_IDS["striped"], NATURAL_IDS["plaid"], NATURAL_IDS["spotted"]]
    light = natural_brightness(n_frames)
    u = np.linspace(0.0, 1.0, n_frames)

    frames = np.empty((n_frames, h, w, 3), np.uint8)
    labels = np.zeros((n_frames, h, w), np.uint32)
    for t in range(n_frames):
        oy = int(round(0.3 * pad * np.sin(np.pi * u[t])))
        ox = int(round(pad * u[t]))
        img = background[oy:oy + h, ox:ox + w].copy()
        for oid in depth:
            _paint_object(img, labels[t], oid, shapes[oid][t], textures[oid])
        dim = 1.0 - light[t]
        img *= np.float32(light[t]) * np.array([1.0, 1.0 - 0.06 * dim, 1.0 - 0.15 * dim],
                                               np.float32)
        img += np.float32(0.012) * rng_noise.standard_normal(img.shape, dtype=np.float32)
        frames[t] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return frames, labels


def _paint_object(img: np.ndarray, labels: np.ndarray, oid: int, s: _Shape,
                  texture: np.ndarray) -> None:
    """Composite one shaded, anti-aliased object over ``img`` and claim its pixels."""
    h, w = labels.shape
    _paint_shadow(img, s)
    fp = _footprint(s, h, w)
    if fp is None:
        return
    alpha = np.clip(fp.edge_dist + 0.5, 0.0, 1.0)
    inside = fp.edge_dist >= 0
    dome = 0.62 + 0.38 * np.sqrt(np.clip(1.0 - fp.u * fp.u, 0.0, 1.0))
    color = _sample(texture, fp) * dome[..., None]
    region = img[fp.rows, fp.cols]
    region += (color - region) * alpha[..., None]
    labels[fp.rows, fp.cols][inside] = oid


def _paint_shadow(img: np.ndarray, s: _Shape) -> None:
    """Soft drop shadow of ``s`` (light from the top left) on whatever is behind it."""
    h, w = img.shape[:2]
    off = 0.12 * s.radius
    shadow = _Shape(s.row + off, s.col + 0.7 * off, s.radius, s.angle, s.harmonics)
    fp = _footprint(shadow, h, w, margin=4.0, texture=False)
    if fp is None:
        return
    weight = 0.4 * np.clip((fp.edge_dist + 3.0) / 6.0, 0.0, 1.0)
    img[fp.rows, fp.cols] *= (1.0 - weight)[..., None]


# =========================================================================== nuclei clip
@dataclass
class _Nucleus:
    label: int
    row: float
    col: float
    radius: float
    angle: float
    a2: float  # elongation
    a3: float
    phase3: float
    brightness: float
    vrow: float = 0.0
    vcol: float = 0.0
    drift_row: float = 0.0  # persistent direction of migration, px / frame
    drift_col: float = 0.0
    boost: float = 0.0  # extra brightness (condensed chromatin), decays
    parent: int = 0
    grow_to: float = 0.0  # daughters grow up to this radius


@dataclass
class _NucleiSim:
    states: list[list[_Nucleus]]  # per frame, snapshot of the living nuclei
    lineage: dict[int, tuple[int, int, int]]
    pair: tuple[int, int]  # labels of the touching pair
    division: tuple[int, int, int, int]  # (parent, daughter1, daughter2, first daughter frame)


def _copy(n: _Nucleus) -> _Nucleus:
    return _Nucleus(**vars(n))


def _place_nuclei(rng: np.random.Generator, h: int, w: int, n: int, r_mean: float
                  ) -> list[_Nucleus]:
    """Random non-overlapping nuclei; nuclei 1 and 2 start touching."""
    nuclei: list[_Nucleus] = []
    tries = 0
    while len(nuclei) < n and tries < 5000:
        tries += 1
        r = r_mean * rng.uniform(0.85, 1.15)
        if len(nuclei) == 1:  # touching partner of nucleus 1
            first = nuclei[0]
            ang = rng.uniform(0, 2 * np.pi)
            d = 0.92 * (first.radius + r)
            row, col = first.row + d * np.sin(ang), first.col + d * np.cos(ang)
        else:
            row, col = rng.uniform(r + 6, h - r - 6), rng.uniform(r + 6, w - r - 6)
        if not (r + 6 <= row <= h - r - 6 and r + 6 <= col <= w - r - 6):
            continue
        gap = 1.0 if len(nuclei) == 1 else 1.25
        if len(nuclei) != 1 and any(
            np.hypot(row - o.row, col - o.col) < gap * (r + o.radius) for o in nuclei
        ):
            continue
        nuclei.append(_Nucleus(
            label=len(nuclei) + 1, row=row, col=col, radius=r,
            angle=rng.uniform(0, np.pi), a2=rng.uniform(0.05, 0.18), a3=rng.uniform(0.0, 0.05),
            phase3=rng.uniform(0, 2 * np.pi), brightness=rng.uniform(0.75, 1.25),
        ))
    for n in nuclei:
        speed, heading = rng.uniform(0.2, 0.8), rng.uniform(0, 2 * np.pi)
        n.drift_row, n.drift_col = speed * np.sin(heading), speed * np.cos(heading)
    partner = nuclei[1] if len(nuclei) > 1 else None
    if partner is not None:  # the touching pair migrates together
        partner.drift_row, partner.drift_col = nuclei[0].drift_row, nuclei[0].drift_col
    return nuclei


def _simulate_nuclei(n_frames: int, h: int, w: int, seed: int) -> _NucleiSim:
    """Positions, shapes and lineage of the nuclei for every frame."""
    rng = _rng(seed, 10)
    r_mean = 0.052 * min(h, w)
    n0 = max(4, int(round(14 * h * w / 256**2)))
    nuclei = _place_nuclei(rng, h, w, n0, r_mean)
    pair = (1, 2)
    cy, cx = h / 2, w / 2
    candidates = [n for n in nuclei if n.label not in pair]
    parent = min(candidates, key=lambda n: np.hypot(n.row - cy, n.col - cx)).label
    t_div = n_frames // 2
    ramp = min(6, t_div)
    next_label = len(nuclei) + 1
    daughters = (next_label, next_label + 1)
    begin = {n.label: 0 for n in nuclei}
    end: dict[int, int] = {}
    parents = {n.label: 0 for n in nuclei}
    states: list[list[_Nucleus]] = []

    for t in range(n_frames):
        if t == t_div:
            nuclei = _divide(nuclei, parent, daughters, rng)
            end[parent] = t - 1
            for d in daughters:
                begin[d], parents[d] = t, parent
        for n in nuclei:
            if n.label == parent and t_div - ramp <= t < t_div:  # prophase: round up, condense
                k = (t - (t_div - ramp) + 1) / ramp
                n.a2 = 0.10 + 0.22 * k
                n.boost = 0.6 * k
        states.append([_copy(n) for n in nuclei])
        _step_nuclei(nuclei, rng, h, w, pair)

    for n in nuclei:
        end.setdefault(n.label, n_frames - 1)
    lineage = {lab: (begin[lab], end[lab], parents[lab]) for lab in sorted(begin)}
    return _NucleiSim(states, lineage, pair, (parent, *daughters, t_div))


def _divide(nuclei: list[_Nucleus], parent: int, daughters: tuple[int, int],
            rng: np.random.Generator) -> list[_Nucleus]:
    """Replace ``parent`` by two smaller, brighter daughters split along its long axis."""
    p = next(n for n in nuclei if n.label == parent)
    keep = [n for n in nuclei if n.label != parent]
    ay, ax = np.sin(p.angle), np.cos(p.angle)
    for sign, label in zip((-1.0, 1.0), daughters):
        off = 0.55 * p.radius
        keep.append(_Nucleus(
            label=label, row=p.row + sign * off * ay, col=p.col + sign * off * ax,
            radius=0.72 * p.radius, angle=p.angle + np.pi / 2 + rng.normal(0, 0.2),
            a2=0.12, a3=0.03, phase3=rng.uniform(0, 2 * np.pi),
            brightness=p.brightness, vrow=sign * 1.4 * ay, vcol=sign * 1.4 * ax,
            drift_row=p.drift_row, drift_col=p.drift_col,
            boost=0.7, parent=parent, grow_to=0.85 * p.radius,
        ))
    return keep


def _step_nuclei(nuclei: list[_Nucleus], rng: np.random.Generator, h: int, w: int,
                 pair: tuple[int, int]) -> None:
    """Advance one frame: persistent random walk, contact forces, walls, slow reshaping."""
    force = {n.label: np.zeros(2) for n in nuclei}
    for i, a in enumerate(nuclei):
        for b in nuclei[i + 1:]:
            d = np.array([b.row - a.row, b.col - a.col])
            dist = float(np.hypot(*d)) + 1e-6
            rest = a.radius + b.radius
            if {a.label, b.label} == set(pair):
                f = 0.25 * (dist - 0.93 * rest)  # sticky pair: spring to a touching distance
            elif dist < 0.95 * rest:
                f = -0.35 * (0.95 * rest - dist)  # push apart when overlapping
            else:
                continue
            force[a.label] += f * d / dist
            force[b.label] -= f * d / dist
    for n in nuclei:
        n.vrow = 0.8 * n.vrow + 0.2 * n.drift_row + rng.normal(0, 0.4) + force[n.label][0] * 0.5
        n.vcol = 0.8 * n.vcol + 0.2 * n.drift_col + rng.normal(0, 0.4) + force[n.label][1] * 0.5
        n.row += n.vrow
        n.col += n.vcol
        lo_r, hi_r = n.radius * 1.3 + 2, h - n.radius * 1.3 - 2
        lo_c, hi_c = n.radius * 1.3 + 2, w - n.radius * 1.3 - 2
        if not lo_r <= n.row <= hi_r:  # bounce off the field-of-view border
            n.row, n.vrow, n.drift_row = float(np.clip(n.row, lo_r, hi_r)), -n.vrow, -n.drift_row
        if not lo_c <= n.col <= hi_c:
            n.col, n.vcol, n.drift_col = float(np.clip(n.col, lo_c, hi_c)), -n.vcol, -n.drift_col
        n.angle += rng.normal(0, 0.04)
        n.phase3 += rng.normal(0, 0.08)
        if n.radius < n.grow_to:  # daughters grow
            n.radius = min(n.radius * 1.01, n.grow_to)
        n.boost *= 0.85


def _nucleus_texture(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """Chromatin: smooth mottling, a few bright chromocentres, dim nucleoli (mean ~1)."""
    tex = 1.0 + 0.18 * _smooth_noise(rng, (size, size), 1.8)
    c = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(rng.integers(3, 7)):
        py, px = c + rng.uniform(-0.6, 0.6, 2) * radius
        tex += 0.45 * np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * 1.3**2))
    for _ in range(rng.integers(1, 3)):
        py, px = c + rng.uniform(-0.4, 0.4, 2) * radius
        tex -= 0.3 * np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * (0.2 * radius) ** 2))
    return np.clip(tex, 0.2, None).astype(np.float32)


def _nucleus_shape(n: _Nucleus) -> _Shape:
    return _Shape(n.row, n.col, n.radius, n.angle,
                  harmonics=[(2, n.a2, 0.0), (3, n.a3, n.phase3)])


def make_nuclei_clip(
    n_frames: int = 40, shape: tuple[int, int] = (256, 256), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fluorescence-like 16-bit time-lapse of moving nuclei with one division.

    Parameters
    ----------
    n_frames : int
        Number of frames (>= 8).
    shape : (int, int)
        Frame (height, width), each >= 64.
    seed : int
        Seed of positions, motion, textures and noise; same seed -> identical arrays.

    Returns
    -------
    frames : (T, H, W) uint16
        Background ~1000 counts, nuclei a few hundred counts brighter; Gaussian PSF
        blur, Poisson shot noise (gain 2) and Gaussian read noise, mild bleaching.
    labels : (T, H, W) uint32
        One id per nucleus track (1..K), consistent over time.  Nuclei 1 and 2 stay
        in contact.  At frame ``n_frames // 2`` one nucleus (the one nearest the
        centre at t=0, excluding 1 and 2) divides: its id ends and two new ids
        (K+1, K+2) start next to each other.  Use ``nuclei_lineage`` with the same
        arguments for the lineage table.
    """
    n_frames, h, w = _check_args(n_frames, shape)
    sim = _simulate_nuclei(n_frames, h, w, seed)
    rng_tex, rng_noise = _rng(seed, 11), _rng(seed, 12)
    r_max = max(n.radius for s in sim.states for n in s)
    tex_size = int(2 * 1.6 * r_max) + 5
    labels_all = sorted(sim.lineage)
    textures = {lab: _nucleus_texture(rng_tex, tex_size, r_max) for lab in labels_all}
    amplitude = 300.0
    bg = 1000.0 + 35.0 * _illumination(h, w) + 6.0 * _smooth_noise(rng_tex, (h, w), 5)

    frames = np.empty((n_frames, h, w), np.uint16)
    labels = np.zeros((n_frames, h, w), np.uint32)
    for t, state in enumerate(sim.states):
        signal = np.zeros((h, w), np.float32)
        best_u = np.full((h, w), np.inf, np.float32)
        for n in state:
            _paint_nucleus(signal, best_u, labels[t], n, textures[n.label])
        bleach = np.exp(-0.004 * t)
        signal = bg + amplitude * bleach * gaussian_filter(signal, 1.3)
        gain = 2.0
        read_noise = np.float32(6.0) * rng_noise.standard_normal((h, w), dtype=np.float32)
        counts = gain * rng_noise.poisson(signal / gain) + read_noise
        frames[t] = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
    return frames, labels


def _illumination(h: int, w: int) -> np.ndarray:
    """Uneven illumination, +-1 at the centre / corners."""
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    return 1.0 - (x * x + y * y)


def _paint_nucleus(signal: np.ndarray, best_u: np.ndarray, labels: np.ndarray, n: _Nucleus,
                   texture: np.ndarray) -> None:
    """Add one nucleus; where nuclei overlap, the pixel goes to the nearer centre (by u)."""
    h, w = labels.shape
    fp = _footprint(_nucleus_shape(n), h, w)
    if fp is None:
        return
    alpha = np.clip(fp.edge_dist + 0.5, 0.0, 1.0)
    region_u = best_u[fp.rows, fp.cols]
    win = (fp.u < region_u) & (alpha > 0)
    if not win.any():
        return
    dome = 0.55 + 0.45 * np.sqrt(np.clip(1.0 - fp.u * fp.u, 0.0, 1.0))
    value = n.brightness * (1.0 + n.boost) * dome * _sample(texture, fp) * alpha
    region_s = signal[fp.rows, fp.cols]
    region_s[win] = value[win]
    region_u[win] = fp.u[win]
    labels[fp.rows, fp.cols][win & (fp.edge_dist >= 0)] = n.label


def nuclei_lineage(
    n_frames: int = 40, shape: tuple[int, int] = (256, 256), seed: int = 0
) -> dict[int, tuple[int, int, int]]:
    """Lineage of ``make_nuclei_clip(n_frames, shape, seed)``.

    Returns
    -------
    dict
        ``{label: (first_frame, last_frame, parent_label)}`` like a Cell Tracking
        Challenge ``man_track.txt`` (parent 0 = no parent).  The two daughters of
        the division have the dividing nucleus as parent.
    """
    n_frames, h, w = _check_args(n_frames, shape)
    return dict(_simulate_nuclei(n_frames, h, w, seed).lineage)


#: name -> generator; every generator takes (n_frames, shape, seed) and returns (frames, labels)
SAMPLE_CLIPS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "natural": make_natural_clip,
    "nuclei": make_nuclei_clip,
}


# =========================================================================== disk I/O
def write_clip(folder: str | Path, frames: np.ndarray, labels: np.ndarray) -> Path:
    """Write a clip as ``folder/frames/00000.png ...`` and ``folder/masks/00000.png ...``.

    Parameters
    ----------
    folder : str or Path
        Output folder (created).  Existing ``frames``/``masks`` PNGs are replaced.
    frames : (T, H, W) or (T, H, W, 3) array, uint8 or uint16
        uint8 RGB -> 8-bit RGB PNG, uint8 grey -> 8-bit grey PNG, uint16 grey ->
        16-bit grey PNG.
    labels : (T, H, W) integer array
        Label images, ids < 65536.  Written as 8-bit grey PNGs when every id is
        < 256, else 16-bit grey PNGs.  Read back with ``np.asarray(Image.open(p))``
        (pixel value = object id).

    Returns
    -------
    Path
        ``folder``.
    """
    from PIL import Image

    frames, labels = np.asarray(frames), np.asarray(labels)
    _check_clip(frames, labels)
    folder = Path(folder)
    frame_dir, mask_dir = folder / "frames", folder / "masks"
    for d in (frame_dir, mask_dir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.png"):
            old.unlink()
    mask_dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    for t in range(frames.shape[0]):
        name = f"{t:05d}.png"
        Image.fromarray(np.ascontiguousarray(frames[t])).save(frame_dir / name, compress_level=1)
        Image.fromarray(labels[t].astype(mask_dtype)).save(mask_dir / name, compress_level=1)
    return folder


def _check_clip(frames: np.ndarray, labels: np.ndarray) -> None:
    if frames.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frames must be uint8 or uint16, got {frames.dtype}")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"frames must be (T, H, W) or (T, H, W, 3), got shape {frames.shape}")
    if frames.ndim == 4 and frames.dtype != np.uint8:
        raise ValueError("colour frames must be uint8")
    if labels.shape != frames.shape[:3]:
        raise ValueError(f"labels shape {labels.shape} does not match frames {frames.shape[:3]}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError("label ids must be in 0..65535 to be written as PNG")


def read_clip(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a clip written by ``write_clip`` -> (frames, labels uint32)."""
    from PIL import Image

    folder = Path(folder)
    frame_files = sorted((folder / "frames").glob("*.png"))
    mask_files = sorted((folder / "masks").glob("*.png"))
    if not frame_files or len(frame_files) != len(mask_files):
        raise FileNotFoundError(
            f"{folder} is not a sample clip: expected matching frames/*.png and masks/*.png, "
            f"found {len(frame_files)} frames and {len(mask_files)} masks"
        )
    frames = np.stack([np.asarray(Image.open(p)) for p in frame_files])
    labels = np.stack([np.asarray(Image.open(p)) for p in mask_files]).astype(np.uint32)
    return frames, labels


def write_lineage(path: str | Path, lineage: dict[int, tuple[int, int, int]]) -> Path:
    """Write a lineage table as CTC ``man_track.txt`` lines ``L B E P``."""
    path = Path(path)
    lines = [f"{lab} {b} {e} {p}" for lab, (b, e, p) in sorted(lineage.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def default_samples_root() -> Path:
    """``$NAPARI_IVOMA_SAMPLES`` or ``<user cache>/napari-ivoma/sample_clips``."""
    env = os.environ.get("NAPARI_IVOMA_SAMPLES")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "napari-ivoma" / "sample_clips"


def _stamp(name: str) -> dict:
    return {"generator": "napari_ivoma.synthetic", "clip": name, "version": GENERATOR_VERSION,
            "seed": 0}


def _is_current(folder: Path, name: str) -> bool:
    try:
        stamp = json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    if stamp != _stamp(name):
        return False
    n = len(list((folder / "frames").glob("*.png")))
    return n > 0 and n == len(list((folder / "masks").glob("*.png")))


def ensure_sample_clips(root: str | Path | None = None, force: bool = False) -> dict[str, Path]:
    """Make sure both sample clips exist on disk and are current; return their folders.

    Parameters
    ----------
    root : str or Path, optional
        Parent folder (default ``default_samples_root()``).  Each clip goes to
        ``root/<name>`` with ``frames/``, ``masks/`` and a version stamp
        ``ivoma_sample.json``; the nuclei clip also gets ``man_track.txt``.
    force : bool
        Regenerate even when a current copy exists.

    Returns
    -------
    dict
        ``{"natural": Path, "nuclei": Path}``.  Folders with a current stamp are
        reused untouched; missing or stale ones are (re)generated with the default
        arguments and seed 0.
    """
    root = Path(root).expanduser() if root is not None else default_samples_root()
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, make in SAMPLE_CLIPS.items():
        folder = root / name
        if force or not _is_current(folder, name):
            _generate_into(folder, name, make)
        out[name] = folder
    return out


def _generate_into(folder: Path, name: str, make: Callable) -> None:
    """Generate clip ``name`` in a temporary sibling folder, then swap it in."""
    if folder.exists() and not (folder / _STAMP).exists() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} exists and is not a napari-ivoma sample clip (no {_STAMP}); "
            "refusing to overwrite it - choose another root"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        frames, labels = make()
        write_clip(tmp, frames, labels)
        if name == "nuclei":
            write_lineage(tmp / "man_track.txt", nuclei_lineage())
        (tmp / _STAMP).write_text(json.dumps(_stamp(name), indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
