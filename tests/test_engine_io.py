"""open_frames: lazy readers for image folders, TIFF stacks, videos and zarr arrays; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_ivoma.engine import FrameReadError, open_frames, to_float_image
from napari_ivoma.engine import io as ivio
from napari_ivoma.engine.io import frames_have_channels


def _clip(t=6, h=24, w=32, c=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (t, h, w, c) if c else (t, h, w)
    return rng.integers(0, 255, size=shape, dtype=np.uint8)


def test_image_folder_is_lazy_one_chunk_per_frame(tmp_path, monkeypatch):
    frames = _clip()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"img_{i}.png")  # natural sort: img_10 after img_9
    reads = []
    real = ivio.read_image
    monkeypatch.setattr(ivio, "read_image", lambda p: reads.append(p) or real(p))
    arr = open_frames(tmp_path)
    assert arr.shape == frames.shape and arr.dtype == np.uint8
    assert arr.chunks[0] == (1,) * len(frames)
    assert len(reads) == 1  # only the first frame, to learn shape and dtype
    np.testing.assert_array_equal(np.asarray(arr[4]), frames[4])
    assert len(reads) == 2


def test_image_folder_natural_order(tmp_path):
    frames = _clip(t=12, c=0)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"t{i}.png")
    arr = open_frames(tmp_path)
    np.testing.assert_array_equal(np.asarray(arr[10]), frames[10])


def test_mixed_shapes_in_folder_are_refused(tmp_path):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "a0.png")
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(tmp_path / "a1.png")
    with pytest.raises(FrameReadError, match="mixed shapes"):
        open_frames(tmp_path)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(FrameReadError, match="holds no images"):
        open_frames(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_frames(tmp_path / "nope.mp4")


def test_unsupported_and_corrupt_files(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(FrameReadError, match="unsupported file type"):
        open_frames(p)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(FrameReadError, match="video"):
        open_frames(bad)
    badtif = tmp_path / "broken.tif"
    badtif.write_bytes(b"II*\x00garbage")
    with pytest.raises(FrameReadError, match="TIFF"):
        open_frames(badtif)


def test_multipage_tiff_16bit(tmp_path):
    frames = (np.arange(5 * 20 * 30, dtype=np.uint16).reshape(5, 20, 30) * 7)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, frames)
    arr = open_frames(path)
    assert arr.shape == frames.shape and arr.dtype == np.uint16
    assert arr.chunks[0] == (1,) * 5
    np.testing.assert_array_equal(np.asarray(arr), frames)


def test_hyperstack_channels_are_read_as_channels_of_each_frame(tmp_path):
    # an ImageJ / OME hyperstack T, C, Y, X: 2T pages, channels interleaved
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4000, (5, 2, 20, 30), dtype=np.uint16)
    for name, kw in [("imagej.tif", {"imagej": True}), ("ome.ome.tif", {})]:
        path = tmp_path / name
        tifffile.imwrite(path, stack, metadata={"axes": "TCYX"}, **kw)
        arr = open_frames(path)
        assert arr.shape == (5, 20, 30, 2) and arr.chunks[0] == (1,) * 5, name
        np.testing.assert_array_equal(np.asarray(arr), np.moveaxis(stack, 1, -1))
        assert frames_have_channels(path)
    # a z-stack with channels and no time: the planes are the frames
    path = tmp_path / "zc.tif"
    tifffile.imwrite(path, stack[:3], imagej=True, metadata={"axes": "ZCYX"})
    np.testing.assert_array_equal(np.asarray(open_frames(path)), np.moveaxis(stack[:3], 1, -1))
    # plain stacks and colour are unchanged
    plain, rgb = tmp_path / "plain.tif", tmp_path / "rgb.tif"
    tifffile.imwrite(plain, stack[:, 0])
    tifffile.imwrite(rgb, rng.integers(0, 255, (3, 20, 30, 3), dtype=np.uint8), photometric="rgb")
    assert open_frames(plain).shape == (5, 20, 30) and not frames_have_channels(plain)
    assert open_frames(rgb).shape == (3, 20, 30, 3) and not frames_have_channels(rgb)


def test_z_stack_over_time_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, np.zeros((4, 3, 2, 16, 16), np.uint16), imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(FrameReadError, match=r"TZCYX.*Z \(3: a z-stack\).*Z Project"):
        open_frames(path)


def _write_ome_zarr(path, data, axes: str, version: str = "0.4"):
    """A minimal OME-Zarr image (NGFF 0.4 on zarr v2, 0.5 on zarr v3), full resolution only."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    group.create_array("0", data=data, chunks=(1,) * (data.ndim - 2) + data.shape[-2:])
    multiscales = [{"version": version, "axes": [{"name": a} for a in axes], "datasets": [{"path": "0"}]}]
    if version == "0.4":
        group.attrs["multiscales"] = multiscales
    else:
        group.attrs["ome"] = {"version": version, "multiscales": multiscales}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_images_are_read_by_their_axes(tmp_path, version):
    data = np.random.default_rng(3).integers(0, 4000, (5, 2, 1, 24, 30), dtype=np.uint16)
    _write_ome_zarr(tmp_path / "cells.ome.zarr", data, "tczyx", version)
    frames = open_frames(tmp_path / "cells.ome.zarr")
    assert frames.shape == (5, 24, 30, 2) and frames.chunks[0] == (1,) * 5
    np.testing.assert_array_equal(np.asarray(frames), np.moveaxis(data[:, :, 0], 1, -1))
    assert frames_have_channels(tmp_path / "cells.ome.zarr")
    _write_ome_zarr(tmp_path / "grey.ome.zarr", data[:, 0, 0], "tyx", version)
    assert open_frames(tmp_path / "grey.ome.zarr").shape == (5, 24, 30)
    _write_ome_zarr(tmp_path / "zstack.ome.zarr", data[:, :, 0], "tzyx", version)
    with pytest.raises(FrameReadError, match=r"TZYX.*Z \(2: a z-stack\)"):
        open_frames(tmp_path / "zstack.ome.zarr")


def test_zarr_array(tmp_path):
    frames = _clip(t=4, c=0)
    z = zarr.open_array(str(tmp_path / "f.zarr"), mode="w", shape=frames.shape, dtype=frames.dtype,
                        chunks=(2, 24, 32))
    z[:] = frames
    arr = open_frames(tmp_path / "f.zarr")
    assert arr.chunks[0] == (1, 1, 1, 1)
    np.testing.assert_array_equal(np.asarray(arr), frames)


def test_video_is_lazy_and_decodes_on_demand(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert writer.isOpened()
    for i in range(30):
        frame = np.full((24, 32, 3), i * 8, np.uint8)
        writer.write(frame)
    writer.release()
    arr = open_frames(path)
    assert arr.shape == (30, 24, 32, 3)
    assert arr.chunks[0] == (1,) * 30
    reader = _find_video_reader(arr)
    assert reader.decoded == 0  # the header frame was read by a separate probe, nothing else
    f20 = np.asarray(arr[20])
    assert reader.decoded == 1
    assert abs(float(f20.mean()) - 160) < 12  # MJPG is lossy


def test_a_recording_cut_short_opens_the_frames_that_decode(tmp_path):
    # a camera-trap AVI whose battery died: the header counts every frame, the data stops early
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    rng = np.random.default_rng(0)
    for _ in range(60):
        writer.write(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    capture = cv2.VideoCapture(str(cut))
    readable = 0
    while capture.read()[0]:
        readable += 1
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 60 and 20 < readable < 60
    with pytest.warns(UserWarning, match=f"header counts 60 frames but only the first {readable} decode"):
        arr = open_frames(cut)
    assert arr.shape[0] == readable
    assert np.asarray(arr[-1]).shape == (32, 48, 3)  # the last frame it offers decodes
    assert open_frames(path).shape[0] == 60  # (a whole file: no warning, every frame)


def _find_video_reader(arr):
    """The _VideoReader behind a dask array built by open_frames (through the task graph)."""
    for task in dict(arr.__dask_graph__()).values():
        for obj in _walk(task):
            if isinstance(obj, ivio._VideoReader):
                return obj
            owner = getattr(obj, "__self__", None)
            if isinstance(owner, ivio._VideoReader):
                return owner
            for cell in getattr(obj, "__closure__", None) or ():
                val = cell.cell_contents
                if isinstance(getattr(val, "__self__", None), ivio._VideoReader):
                    return val.__self__
    raise AssertionError("no video reader in the graph")


def _walk(obj, depth=0):
    yield obj
    if depth > 6:
        return
    if isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _walk(o, depth + 1)
    for attr in ("func", "args", "dsk", "callable"):
        sub = getattr(obj, attr, None)
        if sub is not None and sub is not obj:
            if isinstance(sub, dict):
                for v in sub.values():
                    yield from _walk(v, depth + 1)
            else:
                yield from _walk(sub, depth + 1)


def test_to_float_image():
    g16 = np.array([[1000, 2000], [3000, 4000]], np.uint16)
    f = to_float_image(g16, (1000, 4000))
    assert f.shape == (2, 2, 1) and f.dtype == np.float32
    np.testing.assert_allclose(f[..., 0], [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 0] = 255
    out = to_float_image(rgba)
    assert out.shape == (3, 3, 3) and out[..., 0].min() == 1.0
    with pytest.raises(ValueError):
        to_float_image(np.zeros((2, 2, 2, 2)))
    padded = np.linspace(10.0, 40.0, 64, dtype=np.float32).reshape(8, 8)
    padded[0, :2] = np.nan
    padded[7, 7] = np.inf
    out = to_float_image(padded)[..., 0]
    assert np.isfinite(out).all() and out[0, 0] == 0.0 and out[7, 7] == 1.0
    assert 0.0 < out[3, 3] < out[5, 5] < 1.0  # the range comes from the finite values
    assert to_float_image(np.full((2, 2), np.nan, np.float32)).max() == 0.0


def test_read_image_modes_and_the_bench_reads_frames_the_same_way(tmp_path):
    from napari_ivoma.bench.dataset import read_frame

    grey = (np.arange(24 * 32).reshape(24, 32) % 251).astype(np.uint8)
    alpha = np.full_like(grey, 200)
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "la.png")
    rgb = np.dstack([grey, 255 - grey, grey // 2])
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    tifffile.imwrite(tmp_path / "chw.tif", np.moveaxis(rgb, -1, 0), photometric="minisblack")

    la = ivio.read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(la, grey)  # grey + alpha is grey, not RGB
    assert ivio.read_image(tmp_path / "rgba.png").shape == (24, 32, 4)
    assert ivio.read_image(tmp_path / "p.png").shape == (24, 32, 3)
    np.testing.assert_array_equal(read_frame(tmp_path / "la.png"), grey)
    np.testing.assert_array_equal(read_frame(tmp_path / "rgba.png"), rgb)
    np.testing.assert_array_equal(read_frame(tmp_path / "chw.tif"), rgb)
    with pytest.raises(FrameReadError, match="cannot read image"):
        (tmp_path / "bad.png").write_bytes(b"not a png")
        ivio.read_image(tmp_path / "bad.png")
    # a folder of grey+alpha frames opens as a grey video
    folder = tmp_path / "seq"
    folder.mkdir()
    for t in range(3):
        Image.fromarray(np.dstack([grey, alpha]), "LA").save(folder / f"{t:03d}.png")
    frames = open_frames(folder)
    assert frames.shape == (3, 24, 32)
