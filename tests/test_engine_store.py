"""The zarr mask store: layout, resume, fingerprint refusal, writer, undo."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_ivoma.engine import (
    MaskStore,
    StoreMismatchError,
    is_mask_store,
    read_store_labels,
    write_labels_store,
)
from napari_ivoma.engine.store import ATTR_KEY, video_fingerprint


def _frames(seed=0, t=5):
    return np.random.default_rng(seed).integers(0, 255, (t, 16, 20), dtype=np.uint8)


def test_layout_and_resume(tmp_path):
    fr = _frames()
    fp = video_fingerprint(fr)
    path = tmp_path / "m.zarr"
    s = MaskStore(path, 5, 16, 20, fingerprint=fp, provenance={"source": "x.mp4"})
    s.ensure_object(3)
    s.set_reference(2, "user", [{"object_id": 3, "points": [[1, 2]]}])
    s.write(2, np.full((16, 20), 3, np.uint32))
    s.flush_attrs()
    assert is_mask_store(path)
    g = zarr.open_group(str(path), mode="r")
    lab = g["labels"]
    assert lab.shape == (5, 16, 20) and lab.dtype == np.uint32 and lab.chunks == (1, 16, 20)
    attrs = g.attrs[ATTR_KEY]
    assert attrs["objects"]["3"]["parent"] is None and attrs["objects"]["3"]["colour"].startswith("#")
    assert attrs["references"]["2"]["kind"] == "user"
    assert attrs["provenance"]["fingerprint"]["shape"] == [5, 16, 20]
    assert attrs["provenance"]["source"] == "x.mp4"
    again = MaskStore(path, 5, 16, 20, fingerprint=fp)
    assert again.reference_scribbles(2)[0]["object_id"] == 3
    assert np.all(again.read(2) == 3)


def test_other_video_is_refused_and_untouched(tmp_path):
    path = tmp_path / "m.zarr"
    s = MaskStore(path, 5, 16, 20, fingerprint=video_fingerprint(_frames(0)))
    s.write(1, np.ones((16, 20), np.uint32))
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with pytest.raises(StoreMismatchError, match="another video"):
        MaskStore(path, 5, 16, 20, fingerprint=video_fingerprint(_frames(1)))
    with pytest.raises(StoreMismatchError, match="another video"):
        MaskStore(path, 6, 16, 20, fingerprint=None)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert np.all(read_store_labels(path)[1] == 1)


def test_non_store_folder_is_refused(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    with pytest.raises(StoreMismatchError, match="not a napari-ivoma mask store"):
        MaskStore(d, 2, 4, 4)
    assert (d / "keep.txt").read_text() == "mine"


def test_unwritable_path(tmp_path, monkeypatch):
    # simulate a read-only location (tests may run as root, who can write anywhere)
    import napari_ivoma.engine.store as store_mod

    monkeypatch.setattr(store_mod.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="not writable"):
        MaskStore(tmp_path / "ro" / "m.zarr", 2, 4, 4)
    assert not (tmp_path / "ro").exists()


def test_unwritable_path_as_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((PermissionError, OSError, StoreMismatchError)):
        MaskStore(blocker / "m.zarr", 2, 4, 4)


def test_undo_restores_frames_and_state(tmp_path):
    s = MaskStore(tmp_path / "m.zarr", 4, 8, 8)
    s.begin_step("set_labels", 1)
    s.write(1, np.full((8, 8), 1, np.uint32))
    s.set_reference(1, "user")
    s.begin_step("set_labels", 2)
    s.write(2, np.full((8, 8), 2, np.uint32))
    s.write(3, np.full((8, 8), 2, np.uint32))  # e.g. propagation after it
    s.set_reference(2, "user")
    s.flush_attrs()
    step = s.undo()
    assert step["t"] == 2 and sorted(step["frames"]) == [2, 3]
    assert s.read(2).max() == 0 and s.read(3).max() == 0 and s.read(1).min() == 1
    assert sorted(s.references) == [1]
    resumed = MaskStore(tmp_path / "m.zarr", 4, 8, 8)
    assert resumed.can_undo()
    resumed.undo()
    assert resumed.read(1).max() == 0 and not resumed.references
    with pytest.raises(RuntimeError, match="nothing to undo"):
        resumed.undo()


def test_write_frames_is_undone_like_single_writes(tmp_path):
    s = MaskStore(tmp_path / "m.zarr", 6, 8, 8)
    before = np.zeros((6, 8, 8), np.uint32)
    before[1:4] = 5  # frames 1-3 hold object 5, frame 4 is empty
    for t in range(6):
        s.write(t, before[t])
    s.begin_step("add_scribbles", 2)
    s.write(2, np.full((8, 8), 7, np.uint32))  # the action's own frame, saved first
    new = {t: (np.where(before[t] == 5, 9, 1).astype(np.uint32), before[t]) for t in (1, 2, 3, 4)}
    s.write_frames(new)
    assert [s.read(t).max() for t in range(6)] == [0, 9, 9, 9, 1, 0]
    s.flush_attrs()
    resumed = MaskStore(tmp_path / "m.zarr", 6, 8, 8)
    resumed.undo()
    for t in range(6):
        np.testing.assert_array_equal(resumed.read(t), before[t])
    assert "undo" not in resumed.group or not list(resumed.group["undo"].keys())


def test_undo_of_a_step_saved_one_array_per_frame(tmp_path):
    # stores written before batched undo arrays keep "undo/<n>/<t>"; they are still undone
    s = MaskStore(tmp_path / "m.zarr", 4, 8, 8)
    s.write(1, np.ones((8, 8), np.uint32))
    s.begin_step("set_labels", 1)
    step = s.attrs["undo"][-1]
    s.group.require_group(f"undo/{step['id']}").create_array("1", shape=(8, 8), dtype=np.uint32,
                                                             fill_value=0)[...] = np.ones((8, 8), np.uint32)
    step["frames"].append(1)
    step["computed_from"] = {"1": [-1, -1, -1, -1]}
    s.write(1, np.full((8, 8), 2, np.uint32))  # the frame is already saved in the step
    s.undo()
    assert (s.read(1) == 1).all()


def _stroke(oid, n=50):
    return {"object_id": oid, "points": [[float(i), float(i)] for i in range(n)]}


def test_undo_history_stores_each_scribble_set_once(tmp_path):
    # twenty undo steps used to copy every reference's strokes: the attributes (rewritten at
    # every action) grew with references x steps
    s = MaskStore(tmp_path / "m.zarr", 40, 8, 8)
    for t in range(30):
        s.begin_step("add_scribbles", t)
        s.set_reference(t, "user", [_stroke(1), _stroke(0)])
        s.flush_attrs()
    attrs = zarr.open_group(str(tmp_path / "m.zarr"), mode="r").attrs[ATTR_KEY]
    assert len(attrs["undo"]) == 20
    assert len(attrs["scribbles"]) == 30  # one set per reference; undo steps point at them
    assert all(isinstance(r["scribbles"], str) for r in attrs["references"].values())
    # undo restores the strokes a frame had before the step
    s.begin_step("add_scribbles", 29)
    s.set_reference(29, "user", [_stroke(1), _stroke(0), _stroke(2, 3)])
    s.flush_attrs()
    assert len(s.reference_scribbles(29)) == 3
    s.undo()
    assert [d["object_id"] for d in s.reference_scribbles(29)] == [1, 0]
    assert len(s.attrs["scribbles"]) == 30  # the undone set is forgotten
    resumed = MaskStore(tmp_path / "m.zarr", 40, 8, 8)
    assert len(resumed.reference_scribbles(29)) == 2 and resumed.reference_scribbles(39) == []


def test_format_1_store_is_read_and_upgraded(tmp_path):
    # format 1 kept the strokes inside each reference and each undo step's copy of it
    path = tmp_path / "old.zarr"
    s = MaskStore(path, 4, 8, 8)
    s.write(1, np.ones((8, 8), np.uint32))
    strokes = [_stroke(1, 3)]
    old = {"format": 1, "objects": {"1": {"name": "cell", "colour": "#e6194b", "parent": None}},
           "references": {"1": {"kind": "user", "revision": 2, "scribbles": strokes + [_stroke(0, 2)]},
                          "3": {"kind": "auto", "revision": 3, "scribbles": []}},
           "revision": 3, "undo_counter": 1, "provenance": {},
           "undo": [{"action": "add_scribbles", "t": 1, "id": 1, "frames": [], "empty": [],
                     "state": {"objects": {}, "references": {"1": {"kind": "user", "revision": 1,
                                                                   "scribbles": strokes}}}}]}
    zarr.open_group(str(path), mode="r+").attrs[ATTR_KEY] = old
    r = MaskStore(path, 4, 8, 8)
    assert [d["object_id"] for d in r.reference_scribbles(1)] == [1, 0]
    assert r.reference_scribbles(3) == [] and r.references[3]["kind"] == "auto"
    assert r.attrs["format"] == 2
    r.undo()
    assert r.reference_scribbles(1) == strokes and sorted(r.references) == [1]
    assert zarr.open_group(str(path), mode="r").attrs[ATTR_KEY]["format"] == 2


def test_store_of_a_newer_format_is_refused_untouched(tmp_path):
    path = tmp_path / "new.zarr"
    MaskStore(path, 4, 8, 8).flush_attrs()
    g = zarr.open_group(str(path), mode="r+")
    attrs = dict(g.attrs[ATTR_KEY])
    attrs["format"] = 99
    g.attrs[ATTR_KEY] = attrs
    with pytest.raises(StoreMismatchError, match="newer napari-ivoma"):
        MaskStore(path, 4, 8, 8)
    assert zarr.open_group(str(path), mode="r").attrs[ATTR_KEY]["format"] == 99


def test_write_labels_store_round_trip_and_no_overwrite(tmp_path):
    lab = np.zeros((3, 6, 7), np.int32)
    lab[1, 2:4, 2:5] = 4
    p = write_labels_store(tmp_path / "out.zarr", lab, source="layer")
    got = read_store_labels(p)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(np.asarray(got), lab)
    with pytest.raises(FileExistsError, match="not overwritten"):
        write_labels_store(p, lab)
    with pytest.raises(ValueError, match="negative"):
        write_labels_store(tmp_path / "neg.zarr", -lab)


def test_label_ids_lists_the_ids_present_as_unique_does():
    from napari_ivoma.engine.store import label_ids

    rng = np.random.default_rng(0)
    small = rng.integers(0, 5, (40, 60)).astype(np.uint32)
    small[small == 3] = 0  # an id missing from the middle
    assert label_ids(small) == [0, 1, 2, 4]
    huge = np.array([[0, 7], [2**31, 7]], np.uint32)  # ids larger than the frame: no giant histogram
    assert label_ids(huge) == [0, 7, 2**31]
    assert label_ids(np.ones((3, 3), np.uint16)) == [1]
    assert label_ids(np.zeros((0, 4), np.uint32)) == []


def test_object_areas_and_relabel_agree_for_small_and_huge_ids():
    from napari_ivoma.engine.store import object_areas, relabel

    rng = np.random.default_rng(1)
    small = rng.integers(0, 4, (30, 40)).astype(np.uint32)
    huge = np.where(small > 0, 2**31 - small, 0).astype(np.uint32)  # the same objects, ids near 2**31
    areas = object_areas(small)
    assert areas == {k: int((small == k).sum()) for k in (1, 2, 3)}
    assert object_areas(huge) == {2**31 - k: v for k, v in areas.items()}
    assert object_areas(np.zeros((5, 5), np.uint32)) == {}
    renamed = relabel(small, {2: 9, 3: 0})
    assert np.array_equal(renamed, np.where(small == 2, 9, np.where(small == 3, 0, small)))
    renamed_huge = relabel(huge, {2**31 - 2: 9, 2**31 - 3: 0})
    assert np.array_equal(renamed_huge == 9, renamed == 9) and np.array_equal(renamed_huge == 0, renamed == 0)
    assert np.array_equal(relabel(small, {}), small)


def test_bounding_box_is_the_extent_of_the_mask_grown_within_the_array():
    from napari_ivoma.engine._masks import bounding_box, box_slices

    mask = np.zeros((20, 30), bool)
    assert bounding_box(mask) is None
    mask[3, 5] = mask[9, 26] = True
    assert bounding_box(mask) == (3, 10, 5, 27)
    assert bounding_box(mask, 4) == (0, 14, 1, 30)  # clipped at the top and on the right
    box = bounding_box(mask, 2)
    ys, xs = np.nonzero(mask)
    assert mask[box_slices(box)].sum() == mask.sum()
    assert box == (ys.min() - 2, ys.max() + 3, xs.min() - 2, xs.max() + 3)
