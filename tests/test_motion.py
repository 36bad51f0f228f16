"""Motion: optical flow cache and a frame's own motion with the camera's removed."""

from __future__ import annotations

import numpy as np

from napari_ivoma.engine.motion import motion_features, residual_motion


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
    assert feats.shape == (40, 50, 6) and feats.dtype == np.float32
    assert feats[15, 15, 2] > 2.0 and feats[35, 45, 2] < 0.5  # magnitude channel
