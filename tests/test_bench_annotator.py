"""The simulated annotator: skeleton strokes, frame choice, round-1 and correction scribbles."""

import numpy as np
import pytest

from napari_ivoma.bench.annotator import (
    correction_scribbles,
    first_round_scribbles,
    largest_region,
    opened_error_regions,
    skeleton_path,
    worst_frame,
)


def _inside(region: np.ndarray, points: np.ndarray) -> bool:
    rc = np.rint(points).astype(int)
    return bool(region[rc[:, 0], rc[:, 1]].all())


def test_skeleton_path_of_a_bar_runs_along_its_length():
    region = np.zeros((20, 60), bool)
    region[8:13, 5:55] = True  # 5 x 50 bar
    path = skeleton_path(region)
    assert _inside(region, path)
    assert np.ptp(path[:, 1]) >= 40  # spans most of the bar's length
    assert np.all(np.abs(path[:, 0] - 10) <= 1)  # along the middle row
    steps = np.hypot(*np.diff(path, axis=0).T)
    assert steps.max() <= np.sqrt(2) + 1e-9  # a connected pixel path


def test_skeleton_path_of_an_l_shape_goes_round_the_corner():
    region = np.zeros((50, 50), bool)
    region[5:45, 5:12] = True  # vertical arm
    region[38:45, 5:45] = True  # horizontal arm
    path = skeleton_path(region)
    assert _inside(region, path)
    ends = {tuple(np.rint(path[0]).astype(int)), tuple(np.rint(path[-1]).astype(int))}
    rows = sorted(r for r, _ in ends)
    cols = sorted(c for _, c in ends)
    assert rows[0] < 15 and cols[1] > 35  # one end up the vertical arm, one at the far right


def test_skeleton_path_of_a_single_pixel_is_a_click_and_empty_is_an_error():
    region = np.zeros((5, 5), bool)
    region[2, 3] = True
    np.testing.assert_array_equal(skeleton_path(region), [[2.0, 3.0]])
    with pytest.raises(ValueError, match="empty"):
        skeleton_path(np.zeros((5, 5), bool))


def test_largest_region_keeps_the_biggest_component():
    m = np.zeros((10, 10), bool)
    m[0:2, 0:2] = True  # 4 px
    m[5:9, 5:9] = True  # 16 px
    big = largest_region(m)
    assert big.sum() == 16 and big[6, 6] and not big[0, 0]


def test_worst_frame_round_one_picks_the_frame_with_most_objects_first_on_ties():
    gt = np.zeros((4, 10, 10), np.uint32)
    gt[0, 1:3, 1:3] = 1
    gt[1, 1:3, 1:3] = 1
    gt[1, 6:8, 6:8] = 2
    gt[2] = gt[1]
    t, j = worst_frame(gt, None, 2)
    assert (t, j) == (1, 0.0)


def test_worst_frame_uses_the_prediction():
    gt = np.zeros((3, 10, 10), np.uint32)
    gt[:, 2:6, 2:6] = 1
    pred = gt.copy()
    pred[2, 2:6, 2:4] = 0  # frame 2: J = 0.5
    pred[1, 2:6, 2:5] = 0  # frame 1: J = 0.25 (worst)
    t, j = worst_frame(gt, pred, 1)
    assert t == 1 and j == pytest.approx(0.25)


def test_first_round_scribbles_one_stroke_per_present_object_inside_it():
    gt = np.zeros((30, 30), np.uint32)
    gt[2:10, 2:20] = 1
    gt[15:28, 15:25] = 3
    scribbles = first_round_scribbles(gt, [1, 2, 3])
    assert [s.object_id for s in scribbles] == [1, 3]
    for s in scribbles:
        assert _inside(gt == s.object_id, s.points)
        assert len(s.points) > 3


def test_correction_scribbles_name_false_negatives_and_false_positives():
    gt = np.zeros((40, 40), np.uint32)
    gt[5:20, 5:20] = 1
    gt[25:35, 25:35] = 2
    pred = np.zeros_like(gt)
    pred[5:20, 5:12] = 1  # object 1 missing its right part (FN of 1)
    pred[25:35, 25:35] = 2  # object 2 perfect
    pred[0:4, 30:40] = 2  # a false positive of object 2 on background
    pred[36:38, 0:3] = 1  # a smaller false positive
    scribbles = correction_scribbles(gt, pred, [1, 2])
    by_id = {s.object_id: s for s in scribbles}
    assert sorted(by_id) == [0, 1]
    fn_1 = (gt == 1) & (pred != 1)
    assert _inside(fn_1, by_id[1].points)
    assert _inside((gt == 0) & (pred == 2), by_id[0].points)  # the largest false positive


def test_correction_scribbles_empty_when_the_frame_is_right():
    gt = np.zeros((10, 10), np.uint32)
    gt[2:5, 2:5] = 1
    assert correction_scribbles(gt, gt.copy(), [1]) == []
    with pytest.raises(ValueError, match="shape"):
        correction_scribbles(gt, gt[:5], [1])


def test_every_region_annotator_strokes_each_error_region_that_survives_the_opening():
    gt = np.zeros((80, 80), np.uint32)
    gt[10:50, 10:50] = 1
    pred = gt.copy()
    pred[10:50, 40:50] = 0  # a missed strip of object 1 (400 px)
    pred[60:75, 5:20] = 1  # two false positives, 225 and 160 px ...
    pred[60:70, 50:66] = 1
    pred[2, 70:73] = 1  # ... and a sliver the opening removes
    fp = (gt == 0) & (pred == 1)
    regions = opened_error_regions(fp)
    assert len(regions) == 2  # the sliver is gone; corners are rounded off
    assert regions[0][60:75, 5:20].sum() > 0.95 * 225 and regions[1][60:70, 50:66].sum() > 0.95 * 160
    every = correction_scribbles(gt, pred, [1], every_region=True)
    assert [s.object_id for s in every] == [0, 0, 1]
    assert _inside(regions[0], every[0].points) and _inside(regions[1], every[1].points)
    assert _inside((gt == 1) & (pred == 0), every[2].points)
    # the benchmark's annotator: the largest region per label only
    assert [s.object_id for s in correction_scribbles(gt, pred, [1])] == [0, 1]


def test_opened_error_regions_shrink_the_opening_rather_than_lose_a_thin_error():
    err = np.zeros((60, 60), bool)
    err[10, 5:55] = err[11, 5:55] = True  # a 2 px wide line: any real opening removes it
    regions = opened_error_regions(err)
    assert len(regions) == 1 and regions[0].sum() == err.sum()
    assert opened_error_regions(np.zeros((5, 5), bool)) == []
