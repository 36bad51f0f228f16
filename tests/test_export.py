"""Exporting masks: per-frame PNG (DAVIS layout), per-frame TIFF (CTC layout), one TIFF stack."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import tifffile
from conftest import SHARED_DATA
from PIL import Image

from napari_ivoma.bench.dataset import load_sequence, read_mask
from napari_ivoma.cli import main
from napari_ivoma.engine import Session
from napari_ivoma.engine.export import EXPORT_FORMATS, davis_palette, export_masks, export_paths


def labels_video(n: int = 6, h: int = 24, w: int = 32, top: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, h, w), np.uint32)
    for t in range(n):
        for oid in range(1, top + 1):
            r, c = rng.integers(0, h - 6), rng.integers(0, w - 6)
            lab[t, r:r + 6, c:c + 6] = oid
    lab[-1, 0, 0] = top  # the largest id is on the last frame only
    return lab


def read_back(paths) -> np.ndarray:
    return np.stack([read_mask(p)[0] for p in paths])


@pytest.mark.parametrize("fmt", ["png", "tif", "tif-stack"])
def test_export_round_trips_the_ids(tmp_path, fmt):
    lab = labels_video(top=3)
    paths = export_masks(lab, tmp_path / "out", fmt)
    if fmt == "tif-stack":
        assert [p.name for p in paths] == ["masks.tif"]
        with tifffile.TiffFile(paths[0]) as tf:
            assert tf.is_imagej and tf.series[0].axes == "TYX"  # Fiji opens it as a time stack
            back = tf.asarray()
        assert back.dtype == np.uint16
    else:
        assert len(paths) == len(lab)
        assert paths[0].name == ("00000.png" if fmt == "png" else "mask000.tif")
        back = read_back(paths)
    np.testing.assert_array_equal(back, lab)
    assert not list((tmp_path / "out").glob("*.part"))


def test_png_is_a_davis_palette_mask_readable_as_a_sequence(tmp_path):
    lab = labels_video(n=4, top=2)
    frames = tmp_path / "seq" / "frames"
    frames.mkdir(parents=True)
    for t in range(len(lab)):
        Image.fromarray(np.full(lab.shape[1:] + (3,), 90, np.uint8)).save(frames / f"{t:05d}.jpg")
    export_masks(lab, tmp_path / "seq" / "masks", "png")
    with Image.open(tmp_path / "seq" / "masks" / "00001.png") as im:
        assert im.mode == "P"
        pal = np.asarray(im.getpalette()[:9]).reshape(3, 3)
    np.testing.assert_array_equal(pal, [[0, 0, 0], [128, 0, 0], [0, 128, 0]])  # DAVIS colours
    seq = load_sequence(tmp_path / "seq")  # the benchmark reads an export as ground truth
    np.testing.assert_array_equal(seq.masks, lab)


def test_palette_is_davis():
    pal = davis_palette()
    assert pal.shape == (256, 3)
    np.testing.assert_array_equal(pal[[0, 1, 2, 3, 4, 7, 8]],
                                  [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128],
                                   [128, 128, 128], [64, 0, 0]])
    assert len({tuple(c) for c in pal}) == 256


def test_many_objects_take_wider_pixels(tmp_path):
    lab = labels_video(n=3, top=2)
    lab[1, 5, 5] = 300
    png = export_masks(lab, tmp_path / "png", "png")
    with Image.open(png[0]) as im:
        assert im.mode.startswith("I")  # 16-bit grey: ids above 255
    np.testing.assert_array_equal(read_back(png), lab)
    lab[2, 3, 3] = 70_000
    tif = export_masks(lab, tmp_path / "tif", "tif")
    assert tifffile.imread(tif[0]).dtype == np.uint32
    np.testing.assert_array_equal(read_back(tif), lab)
    with pytest.raises(ValueError, match="16-bit PNG"):
        export_masks(lab, tmp_path / "png2", "png")
    assert not (tmp_path / "png2").exists() or not any((tmp_path / "png2").iterdir())


def test_existing_files_are_never_replaced_by_accident(tmp_path):
    lab = labels_video()
    out = tmp_path / "out"
    export_masks(lab, out, "tif")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = np.zeros_like(lab)
    with pytest.raises(FileExistsError, match="mask000.tif and 5 more"):
        export_masks(other, out, "tif")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    export_masks(other, out, "png")  # other names: fine beside them
    export_masks(other, out, "tif", overwrite=True)
    assert not tifffile.imread(out / "mask003.tif").any()


def test_bad_requests_are_refused_clearly(tmp_path):
    lab = labels_video()
    with pytest.raises(ValueError, match="unknown export format 'jpg'"):
        export_masks(lab, tmp_path, "jpg")
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        export_masks(lab[0], tmp_path, "png")
    with pytest.raises(ValueError, match="integer object ids"):
        export_masks(lab.astype(np.float32), tmp_path, "png")
    with pytest.raises(ValueError, match="negative object id"):
        export_masks(lab.astype(np.int32) - 1, tmp_path, "png")
    with pytest.raises(ValueError, match="no frames"):
        export_masks(lab, tmp_path, "png", start=4, stop=4)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        export_masks(lab, tmp_path / "afile", "png")
    with pytest.raises(PermissionError, match="cannot create the export folder"):
        export_masks(lab, tmp_path / "afile" / "sub", "png")  # even root cannot make this folder


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            export_masks(labels_video(), ro, "png")
        with pytest.raises(PermissionError, match="cannot create"):
            export_masks(labels_video(), ro / "sub", "png")
    finally:
        ro.chmod(0o700)


def test_frame_range_keeps_frame_numbers(tmp_path):
    lab = labels_video(n=12)
    paths = export_masks(lab, tmp_path, "png", start=10, stop=99)
    assert [p.name for p in paths] == ["00010.png", "00011.png"]
    assert export_paths(tmp_path, "tif", 12_000)[-1].name == "mask11999.tif"  # widths grow with the video


def test_cancel_keeps_whole_files_only(tmp_path):
    lab = labels_video(n=8)
    stop = threading.Event()
    done = []

    def progress(k, total):
        done.append(k)
        if k == 3:
            stop.set()

    paths = export_masks(lab, tmp_path / "a", "png", progress=progress, cancel=stop)
    assert len(paths) == 3 and done == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    stop.clear()
    done.clear()
    assert export_masks(lab, tmp_path / "b", "tif-stack", progress=progress, cancel=stop) == []
    assert not any((tmp_path / "b").iterdir())  # an unfinished stack is not left behind


def test_session_export_uses_its_objects(tmp_path):
    lab = labels_video(n=5, h=32, w=40, top=2)
    frames = np.random.default_rng(1).integers(0, 255, (5, 32, 40), dtype=np.uint8)
    session = Session(frames, store=tmp_path / "s.ivoma.zarr")
    session.set_labels(0, lab[0])
    session.set_labels(3, np.where(lab[3] > 0, 300, 0).astype(np.uint32))  # a 16-bit id on one frame
    paths = session.export_masks(tmp_path / "png")
    assert len(paths) == 5
    back = read_back(paths)
    np.testing.assert_array_equal(back[[0, 3]], np.asarray(session.labels)[[0, 3]])
    with Image.open(paths[0]) as im:
        assert im.mode.startswith("I")  # every frame alike, from the session's largest object id
    session.close()


def test_cli_export(tmp_path, capsys):
    lab = labels_video(n=4, h=32, w=40, top=2)
    frames = np.random.default_rng(1).integers(0, 255, (4, 32, 40), dtype=np.uint8)
    store = tmp_path / "v.ivoma.zarr"
    session = Session(frames, store=store)
    session.set_labels(1, lab[1])
    session.close()
    assert main(["export", str(store), str(tmp_path / "out"), "--format", "tif"]) == 0
    back = read_back(sorted((tmp_path / "out").glob("mask*.tif")))
    np.testing.assert_array_equal(back[1], lab[1])
    assert not back[[0, 2, 3]].any()
    assert main(["export", str(store), str(tmp_path / "out"), "--format", "tif"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nostore"), str(tmp_path / "o2")]) == 2
    for fmt in EXPORT_FORMATS:  # the command line offers every format the engine writes
        assert main(["export", str(store), str(tmp_path / f"all_{fmt}"), "--format", fmt]) == 0


def assert_valid_ctc_result(folder, n_frames: int) -> np.ndarray:
    """The Cell Tracking Challenge's rules for a result folder; returns its track table."""
    tracks = np.loadtxt(folder / "res_track.txt", dtype=np.int64, ndmin=2)
    labels, begins, ends, parents = tracks.T
    assert len(set(labels.tolist())) == len(labels), "track labels are unique"
    by_label = {int(k): (int(b), int(e)) for k, b, e in zip(labels, begins, ends)}
    for k, b, e, p in tracks:
        assert 0 <= b <= e < n_frames
        if p:
            assert by_label[int(p)][1] < b, f"parent {p} ends before its daughter {k} begins"
    masks = sorted(folder.glob("mask*.tif"))
    assert len(masks) == n_frames
    for t, path in enumerate(masks):
        on_frame = set(np.unique(tifffile.imread(path)).tolist()) - {0}
        assert on_frame == {k for k, (b, e) in by_label.items() if b <= t <= e}, t
    return tracks


def test_ctc_export_cuts_tracks_where_an_object_is_missing_or_divides(tmp_path):
    lab = np.zeros((10, 20, 30), np.uint32)
    lab[:, 2:6, 2:6] = 1                # object 1 divides on frame 5: daughter 2 appears and
    lab[5:, 12:16, 2:6] = 2             # 1 goes on as the other daughter (the session's way)
    lab[:3, 2:6, 20:24] = 3             # object 3 leaves the frame on 3-4 and comes back
    lab[5:, 2:6, 20:24] = 3
    paths = export_masks(lab, tmp_path / "ctc", "ctc", objects={2: {"parent": 1}})
    assert paths[-1].name == "res_track.txt" and len(paths) == 11
    tracks = assert_valid_ctc_result(tmp_path / "ctc", 10)
    assert tracks.tolist() == [[1, 0, 4, 0], [2, 5, 9, 1], [3, 0, 2, 0], [4, 5, 9, 1], [5, 5, 9, 3]]
    back = read_back(paths[:-1])
    assert (back[5:][lab[5:] == 1] == 4).all() and (back[5:][lab[5:] == 3] == 5).all()
    np.testing.assert_array_equal(back[:3], lab[:3])


def test_cancelled_ctc_export_leaves_no_track_table(tmp_path):
    lab = labels_video(n=6)
    stop = threading.Event()

    def progress(k, total):
        assert total == 12  # the frames are read once for the tracks, then written
        if k == 8:
            stop.set()

    paths = export_masks(lab, tmp_path / "c", "ctc", progress=progress, cancel=stop)
    assert [p.name for p in paths] == ["mask000.tif", "mask001.tif"]
    assert not (tmp_path / "c" / "res_track.txt").exists()


def test_session_ctc_export_uses_its_lineage(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, (4, 32, 40), dtype=np.uint8)
    session = Session(frames, store=tmp_path / "s.ivoma.zarr")
    mother = np.zeros((32, 40), np.uint32)
    mother[4:12, 4:12] = 1
    daughters = mother.copy()
    daughters[20:28, 4:12] = 7
    session.set_labels(0, mother)
    session.set_labels(1, mother)
    session.set_labels(2, daughters)
    session.set_labels(3, daughters)
    session.store.attrs["objects"]["7"]["parent"] = 1  # as a division proposal records it
    assert session.lineage() == {7: 1}
    session.export_masks(tmp_path / "ctc", "ctc")
    tracks = assert_valid_ctc_result(tmp_path / "ctc", 4)
    assert tracks.tolist() == [[1, 0, 1, 0], [7, 2, 3, 1], [8, 2, 3, 1]]
    session.close()


SIM = SHARED_DATA / "cells" / "Fluo-N2DH-SIMplus-01"


@pytest.mark.skipif(not (SIM / "man_track.txt").is_file(),
                    reason=f"real microscopy data not found at {SIM} (see ../shared/data)")
def test_ctc_export_of_the_ground_truth_gives_back_its_lineage_table(tmp_path):
    # SIM+'s gold tracks (ids = track labels, daughters linked to their mother) exported as a
    # result: the table written is the challenge's own man_track.txt
    masks = np.stack([read_mask(p)[0] for p in sorted((SIM / "masks").glob("man_seg*.tif"))])
    truth = np.loadtxt(SIM / "man_track.txt", dtype=np.int64, ndmin=2)
    parents = {int(k): int(p) for k, _, _, p in truth if p}
    paths = export_masks(masks, tmp_path / "res", "ctc", objects={k: {"parent": p} for k, p in parents.items()})
    tracks = assert_valid_ctc_result(tmp_path / "res", len(masks))
    assert tracks.tolist() == sorted(truth.tolist())
    np.testing.assert_array_equal(read_back(paths[:-1]), masks)


def test_csv_table_measures_every_object_on_every_frame(tmp_path):
    lab = np.zeros((3, 20, 30), np.uint32)
    lab[0, 2:6, 4:10] = 1                       # 4 x 6 box
    lab[1, 2:6, 4:10] = 1
    lab[1, 10:13, 20:21] = 7                    # 3 x 1
    lab[2, 0:1, 0:2] = 2**31 - 1                # the largest id the store allows
    objects = {1: {"name": "mother", "parent": None}, "7": {"name": "object 7", "parent": 1}}
    [path] = export_masks(lab, tmp_path / "t", "csv", objects=objects)
    assert path.name == "objects.csv"
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["frame"], r["object_id"]) for r in rows] == [("0", "1"), ("1", "1"), ("1", "7"), ("2", str(2**31 - 1))]
    first, seven = rows[0], rows[2]
    assert (first["name"], first["parent"], first["area"]) == ("mother", "", "24")
    assert (float(first["centroid_row"]), float(first["centroid_col"])) == (3.5, 6.5)
    assert [int(first[k]) for k in ("bbox_row_start", "bbox_col_start", "bbox_row_stop", "bbox_col_stop")] == [2, 4, 6, 10]
    assert (seven["name"], seven["parent"], seven["area"], seven["centroid_row"]) == ("object 7", "1", "3", "11.00")
    assert rows[3]["area"] == "2" and rows[3]["name"] == ""


def test_cancelled_csv_export_leaves_nothing(tmp_path):
    stop = threading.Event()
    paths = export_masks(labels_video(n=6), tmp_path / "c", "csv", progress=lambda k, n: k == 2 and stop.set(),
                         cancel=stop)
    assert paths == [] and not any((tmp_path / "c").iterdir())
