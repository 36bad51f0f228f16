"""Benchmark metrics on hand-computed cases."""

import numpy as np
import pytest

from napari_ivoma.bench.metrics import (
    boundary_f,
    boundary_map,
    frame_j,
    frame_object_j,
    region_j,
    seg_matches,
    seg_score,
    sequence_scores,
    tolerance_pixels,
)


def _box(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_region_j_hand_cases():
    gt = _box((10, 10), 2, 6, 2, 6)  # 16 px
    assert region_j(gt, _box((10, 10), 2, 6, 2, 4)) == pytest.approx(8 / 16)
    # 4x4 vs 4x4 shifted by 2 columns: overlap 8, union 24
    assert region_j(gt, _box((10, 10), 2, 6, 4, 8)) == pytest.approx(8 / 24)
    assert region_j(gt, np.zeros_like(gt)) == 0.0
    assert region_j(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_boundary_map_of_a_square():
    m = _box((7, 7), 2, 5, 2, 5)  # rows 2..4, cols 2..4
    b = boundary_map(m)
    expected = _box((7, 7), 1, 5, 1, 5) & ~_box((7, 7), 2, 4, 2, 4)
    np.testing.assert_array_equal(b, expected)
    assert b.sum() == 12


def test_boundary_map_at_image_border():
    # the image border itself is no boundary: the last column is compared with its lower
    # neighbour only, the last row with its right neighbour only
    assert not boundary_map(np.ones((3, 3), dtype=bool)).any()
    m = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=bool)
    expected = np.array([[0, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(m), expected)


def test_tolerance_pixels_is_ceil_of_diagonal_fraction():
    assert tolerance_pixels((100, 100)) == 2  # 0.008 * 141.4 = 1.13
    assert tolerance_pixels((480, 854)) == 8  # 0.008 * 979.6 = 7.84
    assert tolerance_pixels((100, 100), bound_th=3) == 3


def test_boundary_f_hand_cases():
    gt = _box((100, 100), 30, 50, 30, 50)
    assert boundary_f(gt, gt) == 1.0
    # shifted by 2 px = the tolerance: every boundary pixel still matches
    assert boundary_f(gt, _box((100, 100), 32, 52, 30, 50)) == 1.0
    # far away: nothing matches
    assert boundary_f(gt, _box((100, 100), 70, 90, 70, 90)) == 0.0
    assert boundary_f(gt, np.zeros_like(gt)) == 0.0
    assert boundary_f(np.zeros_like(gt), gt) == 0.0
    assert boundary_f(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_boundary_f_partial_match_by_hand():
    # tolerance 0 (bound_th=0): exact pixel matching.
    # gt: pixel (2, 2) -> boundary {(1,1),(1,2),(2,1),(2,2)}
    # pred: pixels (2, 2..3) -> boundary {(1,1),(1,2),(1,3),(2,1),(2,2),(2,3)}
    gt = _box((6, 6), 2, 3, 2, 3)
    pred = _box((6, 6), 2, 3, 2, 4)
    assert boundary_map(gt).sum() == 4
    assert boundary_map(pred).sum() == 6
    # precision 4/6, recall 4/4 -> F = 2 * (2/3) / (5/3) = 0.8
    assert boundary_f(gt, pred, bound_th=0) == pytest.approx(0.8)


def test_boundary_f_crop_is_exact_near_border():
    # object touching the right border: cropping must not change the score
    gt = _box((60, 80), 10, 30, 60, 80)
    pred = _box((60, 80), 12, 30, 58, 80)
    full = np.zeros((60, 80), bool)
    # compute uncropped reference by hand-rolled dilation check
    from scipy import ndimage

    rad = tolerance_pixels((60, 80))
    yy, xx = np.mgrid[-rad : rad + 1, -rad : rad + 1]
    disk = yy**2 + xx**2 <= rad**2
    gb, pb = boundary_map(gt), boundary_map(pred)
    prec = (pb & ndimage.binary_dilation(gb, disk)).sum() / pb.sum()
    rec = (gb & ndimage.binary_dilation(pb, disk)).sum() / gb.sum()
    assert boundary_f(gt, pred) == pytest.approx(2 * prec * rec / (prec + rec))
    assert boundary_f(full, full) == 1.0


def test_frame_object_j_counts_absent_objects_as_one_and_foreign_ids_as_errors():
    gt = np.zeros((4, 4), np.uint32)
    gt[0, :2] = 1  # object 1: 2 px; object 2 absent
    pred = np.zeros_like(gt)
    pred[0, 0] = 1
    pred[0, 1] = 7  # an id the ground truth does not have
    j = frame_object_j(gt, pred, 2)
    np.testing.assert_allclose(j, [0.5, 1.0])
    assert frame_j(gt, pred, 2) == pytest.approx(0.75)


def test_sequence_scores_mean_over_frames_then_objects():
    gt = np.zeros((2, 10, 10), np.uint32)
    gt[0, 2:6, 2:6] = 1  # object 1 on frame 0 only
    gt[:, 7:9, 7:9] = 2  # object 2 on both frames
    pred = gt.copy()
    pred[0, 2:6, 4:6] = 0  # object 1: J = 8/16 on frame 0, absent in both on frame 1 -> 1
    s = sequence_scores(gt, pred, 2)
    np.testing.assert_allclose(s["J_per_object"], [0.75, 1.0])
    assert s["J"] == pytest.approx(0.875)
    assert s["F_per_object"][1] == 1.0
    assert s["JF"] == pytest.approx((s["J"] + s["F"]) / 2)
    np.testing.assert_allclose(s["J_per_frame"], [0.75, 1.0])


def test_seg_score_hand_case():
    gt = np.zeros((10, 10), np.uint32)
    gt[0, :10] = 5  # A: 10 px
    gt[2, :10] = 9  # B: 10 px
    pred = np.zeros_like(gt)
    pred[0, :6] = 3  # covers 6 of A (> half) ...
    pred[1, :2] = 3  # ... plus 2 px outside -> J = 6 / (10 + 8 - 6) = 0.5
    pred[2, :5] = 4  # exactly half of B: not matched -> 0
    m = seg_matches(gt, pred)
    assert m == {5: pytest.approx(0.5), 9: 0.0}
    assert seg_score(gt, pred) == pytest.approx(0.25)
    # identity-agnostic: relabelling predictions does not change SEG
    assert seg_score(gt, np.where(pred > 0, pred + 100, 0)) == pytest.approx(0.25)
    assert seg_score(np.zeros_like(gt), pred) is None
    assert seg_matches(gt, np.zeros_like(gt)) == {5: 0.0, 9: 0.0}
