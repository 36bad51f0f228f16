"""npe2 reader and writer of napari-ivoma (no viewer needed)."""

from __future__ import annotations

import cv2
import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_ivoma._reader import SOURCE_KEY, napari_get_reader, read_frames, read_mask_store
from napari_ivoma._writer import store_path_of, write_labels
from napari_ivoma.engine import FrameReadError, Session, is_mask_store


def moving_square(n: int = 6, h: int = 40, w: int = 56) -> np.ndarray:
    """(n, h, w, 3) uint8 frames: a bright square moving right on a grey ramp."""
    frames = np.empty((n, h, w, 3), np.uint8)
    ramp = np.linspace(30, 90, w, dtype=np.float32)[None, :, None]
    for t in range(n):
        f = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8).copy()
        f[12:28, 8 + 4 * t: 24 + 4 * t] = (230, 200, 40)
        frames[t] = f
    return frames


def write_video(path, frames: np.ndarray, fourcc: str) -> None:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (w, h))
    if not writer.isOpened():
        pytest.skip(f"OpenCV cannot write {fourcc} video here")
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()


def assert_one_chunk_per_frame(data, n: int) -> None:
    assert isinstance(data, da.Array)
    assert data.shape[0] == n
    assert data.chunks[0] == (1,) * n
    assert all(len(c) == 1 for c in data.chunks[1:])


class CountingCapture:
    """Wraps cv2.VideoCapture to count decoded frames."""

    reads = 0
    real = cv2.VideoCapture

    def __init__(self, *args):
        self._cap = CountingCapture.real(*args)

    def read(self, *args):
        CountingCapture.reads += 1
        return self._cap.read(*args)

    def __getattr__(self, name):
        return getattr(self._cap, name)


# --------------------------------------------------------------------------- reader
@pytest.mark.parametrize(("suffix", "fourcc"), [(".avi", "MJPG"), (".mp4", "mp4v")])
def test_reader_opens_video_lazily_one_chunk_per_frame(tmp_path, suffix, fourcc):
    frames = moving_square()
    path = tmp_path / f"clip{suffix}"
    write_video(path, frames, fourcc)
    reader = napari_get_reader(str(path))
    assert reader is read_frames
    [(data, meta, kind)] = reader(str(path))
    assert kind == "image"
    assert meta["rgb"] is True and meta["name"] == "clip"
    assert meta["metadata"][SOURCE_KEY] == str(path)
    assert data.shape == frames.shape
    assert_one_chunk_per_frame(data, len(frames))
    # lossy codecs: the decoded frame is close to what was written
    err = np.abs(np.asarray(data[3]).astype(int) - frames[3].astype(int)).mean()
    assert err < 12


def test_opening_a_long_video_decodes_at_most_two_frames(tmp_path, monkeypatch):
    frames = np.repeat(moving_square(n=1), 60, axis=0)
    path = tmp_path / "long.avi"
    write_video(path, frames, "MJPG")
    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    CountingCapture.reads = 0
    [(data, _, _)] = napari_get_reader(str(path))(str(path))
    assert data.shape[0] == 60
    assert CountingCapture.reads <= 2  # the first frame, and the last (is the file whole?)
    before = CountingCapture.reads
    np.asarray(data[40])
    assert CountingCapture.reads == before + 1


def test_a_video_cut_short_is_said_in_the_viewer(tmp_path, monkeypatch):
    frames = np.random.default_rng(5).integers(0, 255, (40, 32, 48, 3), dtype=np.uint8)
    whole = tmp_path / "whole.avi"
    write_video(whole, frames, "MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.5)])
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", shown.append)
    [(data, _, _)] = napari_get_reader(str(cut))(str(cut))
    assert 0 < data.shape[0] < 40
    assert len(shown) == 1 and f"only the first {data.shape[0]} decode" in shown[0]


def test_reader_opens_image_folder(tmp_path):
    frames = moving_square(n=5)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(frames):  # numbers not zero-padded: natural sort must hold
        Image.fromarray(f).save(folder / f"f{t * 5}.png")
    [(data, meta, kind)] = napari_get_reader(str(folder))(str(folder))
    assert kind == "image" and meta["name"] == "frames"
    assert_one_chunk_per_frame(data, 5)
    np.testing.assert_array_equal(np.asarray(data), frames)


def test_reader_opens_multipage_tiff_and_leaves_single_images(tmp_path):
    stack = (np.arange(4 * 20 * 24, dtype=np.uint16).reshape(4, 20, 24) * 7)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    [(data, meta, kind)] = napari_get_reader(str(path))(str(path))
    assert kind == "image" and meta["rgb"] is False
    assert_one_chunk_per_frame(data, 4)
    np.testing.assert_array_equal(np.asarray(data), stack)
    lo, hi = meta["contrast_limits"]
    assert lo < hi
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, stack[0])
    assert napari_get_reader(str(single)) is None


def test_reader_opens_each_channel_of_a_hyperstack_as_its_own_layer(tmp_path):
    stack = np.random.default_rng(2).integers(0, 4000, (4, 2, 20, 24), dtype=np.uint16)
    stack[:, 1] //= 10  # a dim second channel gets its own contrast
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TCYX"})
    layers = napari_get_reader(str(path))(str(path))
    assert [meta["name"] for _, meta, _ in layers] == ["cells [channel 0]", "cells [channel 1]"]
    for c, (data, meta, kind) in enumerate(layers):
        assert kind == "image" and meta["rgb"] is False and data.shape == (4, 20, 24)
        assert_one_chunk_per_frame(data, 4)
        np.testing.assert_array_equal(np.asarray(data), stack[:, c])
        assert meta["metadata"] == {"ivoma_source": str(path), "ivoma_channel": c}
        assert meta["contrast_limits"][1] <= stack[0, c].max()


def test_reader_opens_the_channels_of_an_ome_zarr_image(tmp_path):
    from test_engine_io import _write_ome_zarr

    data = np.random.default_rng(4).integers(0, 4000, (3, 2, 1, 20, 24), dtype=np.uint16)
    path = tmp_path / "movie.ome.zarr"
    _write_ome_zarr(path, data, "tczyx")
    layers = napari_get_reader(str(path))(str(path))
    assert [meta["name"] for _, meta, _ in layers] == ["movie [channel 0]", "movie [channel 1]"]
    np.testing.assert_array_equal(np.asarray(layers[1][0]), data[:, 1, 0])


def test_reader_shows_dim_8bit_grey_frames_with_their_own_contrast(tmp_path):
    # 8-bit fluorescence often uses a small part of 0-255 (GOWT1: 99.9% of pixels below 57)
    stack = np.random.default_rng(1).integers(0, 40, (3, 20, 24), dtype=np.uint8)
    stack[:, 5:10, 5:10] = 60
    path = tmp_path / "dim.tif"
    tifffile.imwrite(path, stack)
    [(_, meta, _)] = napari_get_reader(str(path))(str(path))
    lo, hi = meta["contrast_limits"]
    assert lo < 5 and 40 <= hi <= 60
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for t in range(2):
        Image.fromarray(np.full((8, 9, 3), 30, np.uint8)).save(rgb / f"{t}.png")
    [(_, meta, _)] = napari_get_reader(str(rgb))(str(rgb))
    assert meta["rgb"] and meta["contrast_limits"] == (0, 255)


def test_reader_opens_zarr_array(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (7, 16, 18), dtype=np.uint8)
    path = tmp_path / "video.zarr"
    z = zarr.create_array(str(path), shape=arr.shape, chunks=(7, 16, 18), dtype=arr.dtype)
    z[...] = arr
    [(data, _, kind)] = napari_get_reader(str(path))(str(path))
    assert kind == "image"
    assert_one_chunk_per_frame(data, 7)
    np.testing.assert_array_equal(np.asarray(data), arr)


def test_reader_declines_what_it_cannot_handle(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    flat = tmp_path / "flat.zarr"
    zarr.create_array(str(flat), shape=(10, 10), dtype=np.uint8)
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path / "missing.mp4")) is None
    assert napari_get_reader(str(tmp_path / "empty")) is None
    assert napari_get_reader(str(flat)) is None
    assert napari_get_reader([str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]) is None


def test_reader_raises_clear_error_for_corrupt_video(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x01 this is not a video" * 50)
    reader = napari_get_reader(str(path))
    assert reader is read_frames  # claimed by its extension ...
    with pytest.raises(FrameReadError, match="broken.mp4"):  # ... and refused clearly
        reader(str(path))


def test_reader_raises_clear_error_for_corrupt_tiff(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00garbage" * 20)
    reader = napari_get_reader(str(path))
    assert reader is not None
    with pytest.raises(FrameReadError, match="broken.tif"):
        reader(str(path))


# --------------------------------------------------------------------------- mask store
def test_writer_reader_round_trip(tmp_path):
    labels = np.zeros((5, 30, 40), np.uint32)
    labels[1, 5:15, 5:20] = 1
    labels[3, 10:25, 20:35] = 7
    path = tmp_path / "masks.zarr"
    assert write_labels(str(path), labels, {"name": "masks"}) == [str(path)]
    assert is_mask_store(path)
    reader = napari_get_reader(str(path))
    assert reader is read_mask_store
    [(data, meta, kind)] = reader(str(path))
    assert kind == "labels"
    assert isinstance(data, zarr.Array)
    np.testing.assert_array_equal(np.asarray(data), labels)
    assert store_path_of(data) == path


def test_writer_refuses_to_overwrite(tmp_path):
    path = tmp_path / "masks.zarr"
    first = np.ones((2, 8, 8), np.uint32)
    write_labels(str(path), first, {})
    with pytest.raises(FileExistsError, match="not overwritten"):
        write_labels(str(path), np.full((2, 8, 8), 5, np.uint32), {})
    np.testing.assert_array_equal(np.asarray(read_mask_store(str(path))[0][0]), first)
    other = tmp_path / "some_folder"
    other.mkdir()
    with pytest.raises(FileExistsError):
        write_labels(str(other), first, {})


def test_writer_on_own_store_says_saved_and_copies_elsewhere(tmp_path):
    frames = moving_square(n=4)
    store = tmp_path / "clip.ivoma.zarr"
    session = Session(frames, store=str(store))
    painted = np.zeros((40, 56), np.uint32)
    painted[10:20, 10:20] = 3
    session.set_labels(2, painted)
    data = read_mask_store(str(store))[0][0]
    assert write_labels(str(store), data, {}) == [str(store)]  # nothing written, no error
    np.testing.assert_array_equal(np.asarray(data[2]), painted)
    copy = tmp_path / "copy.zarr"
    write_labels(str(copy), data, {})
    np.testing.assert_array_equal(np.asarray(read_mask_store(str(copy))[0][0]), np.asarray(data))
