"""Proposed objects: unclaimed foreground found by propagation, named or dismissed by a stroke."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cells_clip, iou

from napari_ivoma.engine import Scribble, Session
from napari_ivoma.engine.proposals import learn_foreground, link_blobs, unclaimed_blobs


def _stroke_through(mask: np.ndarray, object_id: int) -> Scribble:
    rr, cc = np.nonzero(mask)
    row = int(np.median(rr))
    cols = cc[rr == row]
    pts = np.array([[row, c] for c in range(int(cols.min()) + 2, int(cols.max()) - 1)], float)
    return Scribble(object_id, pts)


@pytest.fixture
def annotated():
    frames, truth = cells_clip()
    s = Session(frames)
    s.add_scribbles(0, [_stroke_through(truth[0] == 1, 1), _stroke_through(truth[0] == 2, 2)])
    s.propagate()
    return s, frames, truth


def test_learn_foreground_separates_bright_cells():
    frames, truth = cells_clip()
    image = (frames[5].astype(np.float32) / frames.max())[..., None]
    model = learn_foreground([image], [truth[5]])
    assert model is not None and model.bright and model.fit_iou > 0.8
    assert iou(model.foreground(image), truth[5] > 0) > 0.8


def test_learn_foreground_refuses_objects_not_told_by_intensity():
    rng = np.random.default_rng(0)
    image = rng.random((60, 60, 1)).astype(np.float32)  # object looks like the background
    labels = np.zeros((60, 60), np.uint32)
    labels[20:40, 20:40] = 1
    assert learn_foreground([image], [labels]) is None


def test_unclaimed_blobs_skip_claimed_objects_and_specks():
    frames, truth = cells_clip()
    image = (frames[8].astype(np.float32) / frames.max())[..., None]
    model = learn_foreground([image], [truth[8]])
    claimed = np.where(truth[8] == 3, 0, truth[8]).astype(np.uint32)
    blobs = unclaimed_blobs(8, image, claimed, model)
    assert len(blobs) == 1
    b = blobs[0]
    full = np.zeros(truth.shape[1:], bool)
    full[b.box[0]:b.box[1], b.box[2]:b.box[3]] = b.mask
    assert iou(full, truth[8] == 3) > 0.7


def test_link_blobs_follows_overlap():
    from napari_ivoma.engine.proposals import Blob

    a = Blob(0, (0, 10, 0, 10), np.ones((10, 10), bool))
    b = Blob(1, (2, 12, 2, 12), np.ones((10, 10), bool))
    far = Blob(1, (40, 50, 40, 50), np.ones((10, 10), bool))
    tracks = link_blobs([[a], [far, b]])
    assert sorted(len(tr) for tr in tracks) == [1, 2]
    assert [x.t for x in max(tracks, key=len)] == [0, 1]


def test_entering_cell_becomes_one_proposal(annotated):
    s, _, truth = annotated
    props = s.proposals
    assert len(props) == 1, props
    pid, (first, last) = next(iter(props.items()))
    assert pid not in (1, 2) and s.objects[pid]["name"].startswith("proposal")
    assert first <= 4 and last == truth.shape[0] - 1
    labels = np.asarray(s.labels[...])
    for t in range(5, truth.shape[0]):
        assert iou(labels[t] == pid, truth[t] == 3) > 0.9, t
    # named objects keep their own identity
    assert iou(labels[10] == 1, truth[10] == 1) > 0.8


@pytest.mark.parametrize("block", [32, 3])
def test_one_stroke_names_a_proposal_on_every_frame_and_undo_restores_it(annotated, block, monkeypatch):
    monkeypatch.setattr("napari_ivoma.engine.session._RENAME_BLOCK", block)  # 3: several zarr calls
    s, _, truth = annotated
    pid = next(iter(s.proposals))
    before = np.asarray(s.labels[...]).copy()
    s.add_scribbles(9, [_stroke_through(truth[9] == 3, 7)])
    after = np.asarray(s.labels[...])
    assert s.proposals == {}
    assert pid not in s.objects and 7 in s.objects
    for t in range(5, truth.shape[0]):
        assert not (after[t] == pid).any()
        assert iou(after[t] == 7, truth[t] == 3) > 0.9, t
    s.undo()
    assert pid in s.proposals
    np.testing.assert_array_equal(np.asarray(s.labels[...]), before)


def test_a_daughter_named_with_its_parents_id_is_not_its_own_parent(annotated):
    s, _, truth = annotated
    pid = next(iter(s.proposals))
    s.store.attrs["objects"][str(pid)]["parent"] = 2  # as if split off object 2 by a division
    s.add_scribbles(9, [_stroke_through(truth[9] == 3, 2)])
    assert pid not in s.objects
    assert s.objects[2]["parent"] is None  # (it was recorded as its own parent)


def test_background_stroke_dismisses_a_proposal_for_good(annotated):
    s, _, truth = annotated
    pid = next(iter(s.proposals))
    s.add_scribbles(9, [_stroke_through(truth[9] == 3, 0)])
    assert s.proposals == {}
    labels = np.asarray(s.labels[...])
    assert not (labels == pid).any()
    s.propagate()  # re-propagation around the new reference must not propose it again
    assert s.proposals == {}
    labels = np.asarray(s.labels[...])
    assert (labels[12][truth[12] == 3] == 0).mean() > 0.9


def test_proposals_off_and_on_colour_video(clip):
    frames, truth = cells_clip()
    s = Session(frames, params={"proposals": "off"})
    s.add_scribbles(0, [_stroke_through(truth[0] == 1, 1), _stroke_through(truth[0] == 2, 2)])
    s.propagate()
    assert s.proposals == {}
    # colour video: off by default ("auto")
    cf, ct = clip
    c = Session(cf)
    c.add_scribbles(0, [_stroke_through(ct[0] == 1, 1)])
    c.propagate()
    assert c.proposals == {}


def test_two_proposals_named_in_one_round_swap_names_on_every_frame(annotated):
    """Naming is simultaneous: proposal a named b while b is named c leaves a as b, b as c (on
    the scribbled frame as on the others), not both as c."""
    s, _, truth = annotated
    a = next(iter(s.proposals))
    last = truth.shape[0] - 1
    b = 2  # object 2 made a proposal too, as if propagation had found it
    s.store.attrs["objects"][str(b)]["proposal"] = {"frames": [0, last]}
    c = 9
    s.add_scribbles(9, [_stroke_through(truth[9] == 3, b), _stroke_through(truth[9] == 2, c)])
    labels = np.asarray(s.labels[...])
    assert s.proposals == {} and a not in s.objects and not (labels == a).any()
    for t in (8, 9, 10):
        assert iou(labels[t] == b, truth[t] == 3) > 0.9, t
        assert iou(labels[t] == c, truth[t] == 2) > 0.8, t
