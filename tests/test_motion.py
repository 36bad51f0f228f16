"""Motion: optical flow cache and a frame's own motion with the camera's removed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import _texture, iou
from scipy import ndimage as ndi

from napari_ivoma.engine import Session
from napari_ivoma.engine.motion import (
    FlowCache,
    camera_homography,
    colour_change,
    motion_features,
    residual_motion,
    to_gray_u8,
)


def test_residual_motion_removes_a_camera_pan_and_keeps_an_object():
    h, w = 120, 160
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = 3.0  # the camera pans: everything moves 3 px right
    flow[..., 1] = -1.0
    flow[40:70, 50:90] += (6.0, 2.0)  # an object moves on its own
    res = residual_motion(flow)
    assert np.abs(res[5:30, 5:40]).max() < 0.3  # background: no motion of its own
    inner = res[48:62, 60:80]
    np.testing.assert_allclose(inner.mean(axis=(0, 1)), (6.0, 2.0), atol=0.5)


def test_motion_features_channels():
    flow = np.zeros((40, 50, 2), np.float32)
    flow[10:20, 10:20, 0] = 4.0
    feats = motion_features([flow, -flow])
    assert feats.shape == (40, 50, 8) and feats.dtype == np.float32
    assert feats[15, 15, 2] > 2.0 and feats[35, 45, 2] < 0.5  # speed channel
    assert np.isnan(feats[..., 3::4]).all()  # no images: the colour change is not measured
    frame = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    still = np.zeros_like(flow)
    feats = motion_features([still, still], frame, [frame, frame])
    assert np.abs(feats[..., 3::4]).max() < 1e-6  # the same frame does not change
    with pytest.raises(ValueError, match="one neighbouring frame per flow"):
        motion_features([flow, -flow], frame, [frame])


def panning_clip(pan: tuple[int, int] = (3, 2), step: int = 6):
    """Three frames of a textured still scene filmed by a panning camera (``pan`` px a frame,
    dx, dy) with a textured square moving ``step`` px a frame to the right on its own, a tail
    (an 8 px wide bar) fixed to it.  Returns (frames, object mask in the middle frame)."""
    rng = np.random.default_rng(3)
    def texture(shape):
        t = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 2.0)
        return np.clip(0.5 + 4.0 * (t - t.mean()), 0, 1)

    scene, tex = texture((220, 300, 3)), texture((60, 110, 3))
    frames, masks = [], []
    for i in (-1, 0, 1):
        y0, x0 = 30 + pan[1] * i, 30 + pan[0] * i
        f = scene[y0:y0 + 150, x0:x0 + 220].copy()
        m = np.zeros((150, 220), bool)
        c = 60 + step * i
        m[45:95, c:c + 50] = True  # the body
        m[65:73, c + 50:c + 100] = True  # the tail
        f[m] = tex[:50, :100][m[45:95, c:c + 100]]
        frames.append(np.ascontiguousarray(f))
        masks.append(m)
    return frames, masks[1]


def test_colour_change_sees_what_moves_against_the_camera():
    frames, obj = panning_clip()
    flows = FlowCache(lambda t: to_gray_u8(frames[t]), "medium")
    change = [colour_change(frames[1], frames[u], camera_homography(flows.flow(1, u))) for u in (0, 2)]
    both = np.minimum(*change)
    near = ndi.distance_transform_edt(~obj) < 8  # the ground the object covers or uncovers
    ground = ~near
    ground[:6], ground[-6:], ground[:, :6], ground[:, -6:] = False, False, False, False  # (frame edge)
    assert np.percentile(both[ground], 99) < 0.02  # still ground, the camera's motion undone
    assert np.median(both[obj]) > 0.08  # the moving object changes against both frames
    tail = np.zeros_like(obj)
    tail[65:73, 120:160] = True
    assert (both[tail] > 0.033).mean() > 0.6  # thin parts too, to a pixel


def test_fusion_drops_a_still_leak_one_direction_carried():
    """Where forward and backward tracking disagree, pixels that stay still against the camera
    while the object moves are dropped (a leak onto look-alike ground); what both directions
    agree on, and disagreement that moves with the object, stay."""
    from napari_ivoma.engine.mrgs import MRGSParams, SoftMask, drop_still_disagreement

    h, w = 60, 80
    yy, xx = np.mgrid[:h, :w]
    body = (yy - 30) ** 2 + (xx - 40) ** 2 <= 12**2
    moving_part = body | ((np.abs(yy - 30) <= 3) & (xx > 40) & (xx <= 56))  # a limb only one side has
    leak = (yy >= 20) & (yy < 40) & (xx >= 4) & (xx < 22)                   # still ground, one side
    fwd = SoftMask.from_binary(body)
    bwd = SoftMask.from_binary(moving_part | leak)
    fused = SoftMask.from_binary(body | moving_part | leak)
    residual = np.zeros((h // 4, w // 4, 2), np.float32)
    moving = cv2.resize((body | moving_part).astype(np.uint8), (w // 4, h // 4), interpolation=cv2.INTER_NEAREST) > 0
    residual[cv2.dilate(moving.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = (6.0, 0.0)
    out = drop_still_disagreement(fused, fwd, bwd, residual, (h, w), MRGSParams())
    full = np.zeros((h, w), bool)
    r0, r1, c0, c1 = out.box
    full[r0:r1, c0:c1] = out.prob > 0.5
    assert full[body].all()
    assert full[moving_part & ~body].mean() > 0.9
    assert not full[leak].any()
    # an object that does not move against the camera: nothing is dropped
    same = drop_still_disagreement(fused, fwd, bwd, np.zeros_like(residual), (h, w), MRGSParams())
    assert same is fused


def test_fused_track_drops_a_still_piece_a_moving_object_carries():
    """A piece of a moving object's fused mask that stays still against the camera (a patch of
    wall a dancer's track picked up) is dropped; a piece moving with it and a slow object's
    pieces stay."""
    from napari_ivoma.engine.mrgs import MRGSParams, SoftMask, drop_still_pieces

    h, w = 60, 80
    yy, xx = np.mgrid[:h, :w]
    body = (yy - 30) ** 2 + (xx - 50) ** 2 <= 12**2
    patch = (yy >= 10) & (yy < 20) & (xx >= 4) & (xx < 20)  # detached, on the still wall
    fused = SoftMask.from_binary(body | patch)
    residual = np.zeros((h, w, 2), np.float32)
    residual[body] = (6.0, 0.0)

    def full(m):
        out = np.zeros((h, w), bool)
        r0, r1, c0, c1 = m.box
        out[r0:r1, c0:c1] = m.prob > 0.5
        return out

    np.testing.assert_array_equal(full(drop_still_pieces(fused, residual, (h, w), MRGSParams())), body)
    residual[patch] = (6.0, 0.0)  # the piece moves with the body (a hand): kept
    np.testing.assert_array_equal(full(drop_still_pieces(fused, residual, (h, w), MRGSParams())), body | patch)
    residual[patch] = 0.0
    residual[body] = (2.0, 0.0)  # a slow object: its still pieces tell nothing
    assert drop_still_pieces(fused, residual, (h, w), MRGSParams()) is fused


def object_passing_a_patch_of_its_colours(speed: int, n_frames: int = 8, seed: int = 0):
    """A textured ellipse moving ``speed`` px a frame to the right over a textured still
    background that holds, away from its path, a still patch of the object's own texture.
    Returns (frames, labels of the object alone, the patch)."""
    h, w = 96, 160
    rng = np.random.default_rng(seed)
    bg = np.stack([_texture(rng, (h, w), 3, lo, hi) for lo, hi in ((60, 140), (90, 160), (40, 110))], axis=2)
    tex = np.stack([_texture(rng, (h, w), 1.5, lo, hi) for lo, hi in ((190, 250), (90, 150), (40, 80))], axis=2)
    patch = np.zeros((h, w), bool)
    patch[8:22, 60:84] = True
    yy, xx = np.mgrid[:h, :w]
    frames = np.zeros((n_frames, h, w, 3), np.uint8)
    labels = np.zeros((n_frames, h, w), np.uint32)
    for t in range(n_frames):
        img = bg.copy()
        img[patch] = tex[patch]
        body = ((yy - 55) / 16.0) ** 2 + ((xx - 30 - speed * t) / 20.0) ** 2 <= 1
        img[body] = np.roll(tex, speed * t, axis=1)[body]
        labels[t][body] = 1
        frames[t] = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    return frames, labels, patch


@pytest.mark.parametrize("reference", [0, 7])
def test_a_one_direction_track_drops_a_still_piece_of_a_moving_object(reference):
    """Tracked one way from its only reference (forward from the first frame, backward from the
    last), an object moving 6 px a frame leaves behind the detached still piece its reference
    mask also holds (a patch of the wall coloured like it); without the rule the track carries
    the piece to every frame."""
    frames, gt, patch = object_passing_a_patch_of_its_colours(speed=6)
    ref = gt[reference].copy()
    ref[patch] = 1
    for setting, carried in ((0.8, False), (0.0, True)):
        s = Session(frames, params={"track_still_pieces": setting})
        s.set_labels(reference, ref)
        out = np.asarray(s.propagate())
        assert np.array_equal(out[reference], ref)  # the reference itself is the user's word
        for t in set(range(8)) - {reference}:
            if carried:
                assert ((out[t] == 1) & patch).sum() > 0.5 * patch.sum(), t  # (not a vacuous test)
            else:
                assert ((out[t] == 1) & patch).sum() == 0, t
                assert iou(out[t] == 1, gt[t] == 1) > 0.9, t


def test_a_one_direction_track_of_a_slow_object_keeps_its_still_pieces():
    frames, gt, patch = object_passing_a_patch_of_its_colours(speed=2)
    ref = gt[0].copy()
    ref[patch] = 1
    s = Session(frames)
    s.set_labels(0, ref)
    out = np.asarray(s.propagate())
    for t in range(1, 8):
        assert ((out[t] == 1) & patch).sum() > 0.5 * patch.sum(), t  # 2 px a frame tells nothing


def test_fusion_still_check_takes_one_direction_whole():
    """After anomaly repair the fused mask can be one direction's, in its own box, smaller than
    the other direction's: the check still works (regression: a broadcasting error)."""
    from napari_ivoma.engine.mrgs import MRGSParams, SoftMask, drop_still_disagreement

    h, w = 60, 80
    a = np.zeros((h, w), bool)
    a[10:50, 10:70] = True
    b = np.zeros((h, w), bool)
    b[20:40, 30:50] = True
    fwd, bwd = SoftMask.from_binary(a), SoftMask.from_binary(b)
    residual = np.full((h // 4, w // 4, 2), 6.0, np.float32)
    residual[:, : w // 8] = 0.0  # the left half stays still
    out = drop_still_disagreement(bwd, fwd, bwd, residual, (h, w), MRGSParams())
    full = np.zeros((h, w), bool)
    r0, r1, c0, c1 = out.box
    full[r0:r1, c0:c1] = out.prob > 0.5
    np.testing.assert_array_equal(full, b)  # bwd's pixels are claimed by both: all kept


def test_fill_small_holes_takes_only_small_enclosed_holes():
    from napari_ivoma.engine._masks import fill_small_holes

    m = np.zeros((60, 80), bool)
    m[5:55, 5:75] = True
    m[10:14, 10:14] = False   # 16 px: filled
    m[20:50, 40:70] = False   # 900 px, over 5% of the object: kept
    m[0:10, 60:64] = False    # a notch open to the crop's edge: not a hole
    out = fill_small_holes(m, 0.05)
    assert out[10:14, 10:14].all()
    assert not out[20:50, 40:70].any() and not out[0:10, 60:64].any()
    assert (out >= m).all() and (out != m).sum() == 16  # only the small hole changed
    # a small hole holding another object's core (a nucleus the object wraps around) stays
    blocked = np.zeros_like(m)
    blocked[11:13, 11:13] = True
    assert not fill_small_holes(m, 0.05, blocked)[10:14, 10:14].any()
