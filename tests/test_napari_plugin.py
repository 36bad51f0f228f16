"""The napari side: manifest, dock widget, samples, reader in a viewer and the full annotation loop.

Runs headless under pytest-xvfb (``make_napari_viewer`` from napari's pytest plugin).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi

from napari_ivoma._layers import (
    BRUSH_BACKGROUND,
    default_store_path,
    frames_before_paint,
    frames_in_paint_event,
    scribbles_from_brush,
    shape_outline,
    shapes_on_frame,
    skeleton_chains,
)
from napari_ivoma._widget import AnnotatorWidget
from napari_ivoma.engine import Scribble, Session, is_mask_store

PLUGIN = "napari-ivoma"
WIDGET = "Annotate video"


def make_clip(n: int = 8, h: int = 64, w: int = 88, seed: int = 0):
    """RGB uint8 clip: a red disc moving right and a blue square moving down on noise; + labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    background = (rng.random((h, w, 3)) * 60 + 40).astype(np.uint8)
    frames = np.empty((n, h, w, 3), np.uint8)
    truth = np.zeros((n, h, w), np.uint32)
    for t in range(n):
        disc = (yy - 22) ** 2 + (xx - (20 + 2 * t)) ** 2 <= 10**2
        square = (np.abs(yy - (40 + t)) <= 8) & (np.abs(xx - 66) <= 8)
        frame = background.copy()
        frame[disc] = (220, 40, 40)
        frame[square] = (40, 60, 220)
        frames[t], truth[t][disc], truth[t][square] = frame, 1, 2
    return frames, truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture
def clip_tiff(tmp_path):
    frames, truth = make_clip()
    path = tmp_path / "clip.tif"
    tifffile.imwrite(path, frames, photometric="rgb")
    return path, frames, truth


@pytest.fixture
def annotator(make_napari_viewer, clip_tiff, tmp_path):
    """A viewer with the clip opened by napari-ivoma and the widget docked on a tmp store."""
    path, frames, truth = clip_tiff
    viewer = make_napari_viewer()
    [image] = viewer.open(str(path), plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.image.value = image
    widget.store.value = tmp_path / "clip.ivoma.zarr"
    return viewer, widget, frames, truth


def draw_path(widget: AnnotatorWidget, t: int, object_id: int, points) -> None:
    widget.object_id.value = object_id
    pts = np.asarray(points, dtype=float)
    widget.shapes_layer.add_paths([np.column_stack([np.full(len(pts), t), pts])])


# --------------------------------------------------------------------------- manifest
def test_npe2_discovers_the_plugin():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    assert manifest.display_name == "IVOMA video annotation"
    contrib = manifest.contributions
    assert all(c.id.startswith(PLUGIN + ".") for c in contrib.commands)
    assert {r.command for r in contrib.readers} == {"napari-ivoma.get_reader"}
    assert contrib.readers[0].accepts_directories
    assert [w.layer_types for w in contrib.writers] == [["labels"]]
    assert {s.key for s in contrib.sample_data} == {"natural_clip", "nuclei_clip"}
    assert [w.display_name for w in contrib.widgets] == [WIDGET]
    readers = {r.command for r in pm.iter_compatible_readers(["movie.mp4"])}
    assert "napari-ivoma.get_reader" in readers


def test_widget_docks(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert isinstance(widget, AnnotatorWidget)
    assert widget.session is None
    layer = viewer.add_image(np.zeros((3, 8, 8), np.uint8), name="video")
    assert [c.name for c in widget.image.choices] == ["video"]
    assert widget.image.value.name == "video"
    assert str(widget.store.value).endswith("video.ivoma.zarr")
    viewer.layers.remove(layer)
    assert widget.image.choices == ()
    assert "Start" in widget.start_button.text


@pytest.mark.parametrize("key", ["natural_clip", "nuclei_clip"])
def test_sample_opens_with_hidden_ground_truth(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    kinds = [type(layer).__name__ for layer in viewer.layers]
    assert kinds == ["Image", "Labels"]
    image, truth = viewer.layers
    assert image.data.ndim in (3, 4) and image.data.shape[0] > 1
    assert truth.visible is False
    assert truth.data.shape[:3] == image.data.shape[:3]


# --------------------------------------------------------------------------- reader in a viewer
def test_viewer_opens_video_lazily(make_napari_viewer, tmp_path, monkeypatch):
    frames, _ = make_clip(n=1)
    frames = np.repeat(frames, 50, axis=0)
    path = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (88, 64))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()

    reads = []
    real = cv2.VideoCapture

    class Counting:
        def __init__(self, *args):
            self._cap = real(*args)

        def read(self, *args):
            reads.append(1)
            return self._cap.read(*args)

        def __getattr__(self, name):
            return getattr(self._cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.shape == (50, 64, 88, 3)
    assert layer.data.chunks[0] == (1,) * 50
    # the first frame, the last (is the file whole?), plus the one frame napari displays
    assert len(reads) <= 3


def test_viewer_opens_mask_store_as_labels(make_napari_viewer, tmp_path):
    frames, truth = make_clip(n=3)
    store = tmp_path / "s.ivoma.zarr"
    session = Session(frames, store=str(store))
    session.set_labels(1, truth[1])
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(store), plugin=PLUGIN)
    assert type(layer).__name__ == "Labels"
    assert isinstance(layer.data, zarr.Array)
    np.testing.assert_array_equal(np.asarray(layer.data[1]), truth[1])


def test_save_layer_with_plugin_refuses_overwrite(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((3, 16, 16), np.uint32)
    labels[1, 4:9, 4:9] = 2
    layer = viewer.add_labels(labels, name="masks")
    path = tmp_path / "saved.zarr"
    written = layer.save(str(path), plugin=PLUGIN)
    assert written == [str(path)]
    assert is_mask_store(path)
    [reopened] = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(reopened.data), labels)
    with pytest.raises(Exception, match="not overwritten"):
        layer.save(str(path), plugin=PLUGIN)


# --------------------------------------------------------------------------- the annotation loop
def test_full_loop_scribbles_mask_propagate_reopen(annotator, make_napari_viewer, tmp_path, qtbot):
    viewer, widget, frames, truth = annotator
    widget.start_button.changed.emit(True)
    assert widget.session is not None, widget.status.value
    assert widget.masks_layer.data is widget.session.labels
    assert widget.shapes_layer.mode == "add_path"

    viewer.dims.current_step = (0, 0, 0)
    draw_path(widget, 0, 1, [[15, 15], [22, 27], [29, 17]])
    draw_path(widget, 0, 2, [[34, 60], [40, 72], [46, 60]])
    draw_path(widget, 0, 0, [[4, 4], [4, 84], [60, 84], [60, 4]])
    assert list(widget.shapes_layer.features["object_id"]) == [1, 2, 0]
    widget.object_id.value = 3
    draw_path(widget, 4, 3, [[5, 40], [8, 44]])  # on another frame: must stay
    widget.object_id.value = 1

    widget.to_mask_button.changed.emit(True)  # CPSM in a worker thread
    assert not widget.propagate_button.enabled  # busy meanwhile
    qtbot.waitUntil(lambda: not widget._busy, timeout=120_000)
    assert "error" not in widget.status.value, widget.status.value
    assert widget.shapes_layer.editable
    assert widget.shapes_layer.mode == "add_path"  # the drawing mode is back after the step
    mask0 = np.asarray(widget.masks_layer.data[0])
    for oid in (1, 2):
        assert iou(mask0 == oid, truth[0] == oid) > 0.5
    assert len(widget.shapes_layer.data) == 1  # frame-0 shapes moved into the session
    assert widget.session.references == {0: "user"}
    assert len(widget.session.scribbles(0)) == 3

    worker = widget.propagate()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert widget.progress.value == widget.progress.max
    last = np.asarray(widget.masks_layer.data[7])
    for oid in (1, 2):
        assert iou(last == oid, truth[7] == oid) > 0.5
    assert "propagation done" in widget.status.value

    store = widget.session.store_path
    saved = np.asarray(widget.session.labels)
    viewer.close()
    other = make_napari_viewer()
    [reopened] = other.open(str(store), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(reopened.data), saved)


def test_hand_edit_becomes_reference_before_propagation(annotator):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    session = widget.session
    session.set_labels(0, truth[0])  # a first reference without CPSM (fast)
    masks = widget.masks_layer
    viewer.dims.current_step = (5, 0, 0)
    masks.brush_size = 6
    masks.paint((5, 10, 10), 4)
    assert widget.edited_frames == {5}
    painted = np.asarray(masks.data[5]) == 4
    assert painted.sum() > 10
    widget.propagate(block=True)
    assert session.references.get(5) == "user"
    np.testing.assert_array_equal(np.asarray(masks.data[5]) == 4, painted)
    assert widget.edited_frames == set()
    assert 4 in session.objects
    assert widget.references.value == "by you: frames 0, 5"


def test_reference_frames_are_listed_readably():
    from napari_ivoma._widget import _frame_list

    assert _frame_list([4]) == "frame 4"
    assert _frame_list([0, 10, 20]) == "frames 0, 10, 20"
    long = _frame_list(list(range(0, 10_000, 10)))  # a long movie's automatic references
    assert long == "frames 0, 10, 20, 30, 40, ..., 9950, 9960, 9970, 9980, 9990 (1000 frames)"


def test_undo_and_cancel(annotator):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    session = widget.session
    session.set_labels(0, truth[0])
    cancelled_at = []

    def stop_after_first(done, total):
        cancelled_at.append(done)
        widget.cancel()

    widget._bridge.progress.connect(stop_after_first)
    widget.propagate(block=True)
    assert "cancelled" in widget.status.value
    assert not np.asarray(widget.masks_layer.data[7]).any()  # never reached
    widget._bridge.progress.disconnect(stop_after_first)
    widget.propagate(block=True)
    assert np.asarray(widget.masks_layer.data[7]).any()

    masks = widget.masks_layer
    viewer.dims.current_step = (3, 0, 0)
    masks.paint((3, 30, 30), 5)
    widget.commit_hand_edits()
    assert session.references.get(3) == "user"
    widget.undo_button.changed.emit(True)
    assert 3 not in session.user_references
    assert "undone" in widget.status.value


def test_undo_after_brush_edit_restores_pixels(annotator):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    session = widget.session
    session.set_labels(2, truth[2])  # a reference painted over below
    masks = widget.masks_layer
    masks.brush_size = 8
    viewer.dims.current_step = (2, 0, 0)
    masks.paint((2, 22, 24), 7)  # over the disc (object 1)
    masks.paint((2, 26, 28), 7)  # second stroke, same frame
    viewer.dims.current_step = (5, 0, 0)
    masks.paint((5, 10, 10), 7)  # a frame that was empty
    assert (np.asarray(masks.data[2]) == 7).sum() > 40
    widget.commit_hand_edits()
    assert session.references == {2: "user", 5: "user"}
    widget.undo()  # frame 5's edit
    assert not np.asarray(masks.data[5]).any()
    widget.undo()  # frame 2's edit
    np.testing.assert_array_equal(np.asarray(masks.data[2]), truth[2])

    # pending (not yet sent) brush edits on two frames: one Undo takes them all back
    masks.paint((2, 40, 66), 0)
    viewer.dims.current_step = (6, 0, 0)
    masks.paint((6, 30, 30), 3)
    widget.undo_button.changed.emit(True)
    assert "hand edit" in widget.status.value, widget.status.value
    np.testing.assert_array_equal(np.asarray(masks.data[2]), truth[2])
    assert not np.asarray(masks.data[6]).any()
    assert session.references == {2: "user"}


def test_remove_reference_button(annotator):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    session = widget.session
    session.set_labels(0, truth[0])
    session.set_labels(4, truth[4])
    viewer.dims.current_step = (4, 0, 0)
    assert widget.remove_ref_button.native.isVisibleTo(widget.native)  # in the layout
    widget.remove_ref_button.changed.emit(True)
    assert session.references == {0: "user"}
    assert "no longer a reference" in widget.status.value
    assert "4" not in widget.references.value
    widget.remove_ref_button.changed.emit(True)  # not a reference any more
    assert "not a reference" in widget.status.value
    widget.undo()
    assert session.references == {0: "user", 4: "user"}


def test_session_closed_when_replaced_or_layer_removed(annotator, monkeypatch):
    viewer, widget, frames, truth = annotator
    closed = []
    monkeypatch.setattr(Session, "close", lambda self: closed.append(self))
    first = widget.start_session()
    viewer.dims.current_step = (1, 0, 0)
    widget.masks_layer.paint((1, 10, 10), 2)
    second = widget.start_session()  # resume: the first session is replaced
    assert closed == [first]
    assert first.references == {1: "user"}  # its pending hand edit was sent first
    assert second.references == {1: "user"}
    viewer.layers.remove(widget.masks_layer)
    assert closed == [first, second]
    assert widget.session is None
    assert "session closed" in widget.status.value
    third = widget.start_session()
    viewer.layers.remove(widget.image_layer)
    assert closed[-1] is third and widget.session is None


def test_scribble_brush_layer_makes_mask(annotator, qtbot):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    brush = widget.brush_layer
    assert brush.name == "scribble brush"
    names = [layer.name for layer in viewer.layers]  # strokes drawn above the masks
    assert names.index("clip") < names.index("masks") < names.index("scribble brush") < names.index("scribbles")
    assert tuple(viewer.dims.axis_labels) == ("t", "y", "x")
    assert brush.data.shape == truth.shape[1:]  # one (H, W) frame, not the video
    viewer.dims.current_step = (3, 0, 0)
    widget.object_id.value = 2
    assert brush.selected_label == 2
    brush.brush_size = 3
    for c in range(60, 73, 2):  # a stroke across the square
        brush.paint((43, c), 2)
    widget.object_id.value = 1
    draw_path(widget, 3, 1, [[17, 20], [22, 26], [27, 22]])  # a path on the disc (Shapes)
    widget.object_id.value = 0
    assert brush.selected_label == BRUSH_BACKGROUND
    for r in range(4, 60, 3):  # background strokes on the left and right edges
        brush.paint((r, 3), BRUSH_BACKGROUND)
        brush.paint((r, 84), BRUSH_BACKGROUND)
    labels = widget.scribbles_to_mask()
    assert "error" not in widget.status.value, widget.status.value
    for oid in (1, 2):
        assert iou(labels == oid, truth[3] == oid) > 0.5
    assert not np.asarray(brush.data).any()  # cleared
    assert len(widget.shapes_layer.data) == 0
    assert {s.object_id for s in widget.session.scribbles(3)} == {0, 1, 2}


def test_a_wide_brush_stroke_holds_every_pixel_it_painted(annotator):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    brush = widget.brush_layer
    viewer.dims.current_step = (2, 0, 0)
    widget.object_id.value = 1
    brush.brush_size = 3
    for c in range(20, 27, 2):  # a short stroke in the disc
        brush.paint((22, c), 1)
    widget.object_id.value = 0
    brush.brush_size = 9
    for r in range(8, 38, 2):  # background painted 9 px wide over the disc's right side
        brush.paint((r, 30), BRUSH_BACKGROUND)
    painted = np.asarray(brush.data) == BRUSH_BACKGROUND
    assert (truth[2][painted] == 1).sum() > 60
    labels = widget.scribbles_to_mask()
    assert not labels[painted].any()
    assert iou(labels == 1, (truth[2] == 1) & ~painted) > 0.75  # (the rest of the disc: 0.80-0.84)


def test_masks_made_elsewhere_become_a_reference(annotator):
    """A Labels layer from another tool (Cellpose, an earlier annotation) gives the shown frame
    its masks: a user reference, propagated like scribbled ones, undoable."""
    viewer, widget, frames, truth = annotator
    widget.start_session()
    assert [layer.name for layer in widget.import_layer.choices] == []  # (not masks, not the brush)
    one = viewer.add_labels(truth[3].astype(np.int32), name="cellpose frame 3")
    every = viewer.add_labels(truth.astype(np.int32), name="earlier annotation")
    assert [layer.name for layer in widget.import_layer.choices] == ["cellpose frame 3", "earlier annotation"]
    viewer.dims.current_step = (3, 0, 0)
    widget.import_layer.value = one
    widget.import_button.changed.emit(True)
    assert "error" not in widget.status.value, widget.status.value
    np.testing.assert_array_equal(np.asarray(widget.session.labels[3]), truth[3])
    assert widget.session.references == {3: "user"}
    widget.use_layer_masks(every, t=6)  # (T, H, W): its frame 6
    np.testing.assert_array_equal(np.asarray(widget.session.labels[6]), truth[6])
    widget.propagate(block=True)
    assert iou(np.asarray(widget.session.labels[0]) == 1, truth[0] == 1) > 0.8
    widget.undo()  # the propagation and frame 6's masks
    assert 6 not in widget.session.references
    with pytest.raises(ValueError, match="shape"):
        widget.use_layer_masks(viewer.add_labels(np.zeros((5, 5), np.int32), name="tiny"))


def test_store_of_another_video_is_refused(annotator, tmp_path):
    viewer, widget, frames, truth = annotator
    other = tmp_path / "other.ivoma.zarr"
    Session(frames[:, ::-1].copy(), store=str(other)).set_labels(0, truth[0])
    before = np.asarray(zarr.open_group(str(other), mode="r")["labels"])
    widget.store.value = other
    widget.start_button.changed.emit(True)
    assert widget.session is None
    assert "another video" in widget.status.value
    after = np.asarray(zarr.open_group(str(other), mode="r")["labels"])
    np.testing.assert_array_equal(before, after)


def test_actions_without_session_show_errors(annotator):
    viewer, widget, frames, truth = annotator
    widget.to_mask_button.changed.emit(True)
    assert "start a session" in widget.status.value
    widget.start_session()
    widget.to_mask_button.changed.emit(True)
    assert "no scribbles on frame" in widget.status.value
    widget.propagate_button.changed.emit(True)
    assert "nothing to propagate" in widget.status.value


def test_object_id_sets_feature_colour_and_keys(annotator):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    shapes = widget.shapes_layer
    widget.object_id.value = 2
    assert int(shapes.feature_defaults["object_id"][0]) == 2
    np.testing.assert_allclose(
        np.asarray(shapes._current_edge_color).ravel()[:3], np.asarray(widget.colour_of(2))[:3], atol=1e-6
    )
    draw_path(widget, 0, 2, [[5, 5], [9, 9]])
    assert int(shapes.features["object_id"].iloc[-1]) == 2
    viewer.keymap  # noqa: B018 - bound keys live on the viewer's keymap
    binding = {str(k): v for k, v in viewer.keymap.items()}
    up = next(v for k, v in binding.items() if "Shift" in k and "Up" in k)
    up(viewer)
    assert widget.object_id.value == 3
    widget.object_id.value = 0
    assert widget.colour_of(0) == "#ffffff"


def test_default_store_path(tmp_path):
    video = tmp_path / "clip.mp4"
    assert default_store_path(video, "clip") == tmp_path / "clip.mp4.ivoma.zarr"
    assert default_store_path(None, "my clip", home=tmp_path) == tmp_path / "napari-ivoma" / "my_clip.ivoma.zarr"
    assert default_store_path(video, "clip", channel=1) == tmp_path / "clip.mp4.channel1.ivoma.zarr"


def test_one_channel_of_a_hyperstack_is_annotated_in_its_own_store(make_napari_viewer, tmp_path):
    """A two-channel time-lapse opens as two layers; the nuclei channel is annotated with a
    store of its own next to the file, and the other channel's store is another one."""
    frames, truth = make_clip()
    nuclei = frames[..., 0].astype(np.uint16) * 10  # the red disc is bright in channel 0
    other = frames[..., 2].astype(np.uint16) * 10
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, np.stack([nuclei, other], axis=1), imagej=True, metadata={"axes": "TCYX"})
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["cells [channel 0]", "cells [channel 1]"]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.image.value = layers[1]
    assert Path(str(widget.store.value)) == tmp_path / "cells.tif.channel1.ivoma.zarr"
    widget.image.value = layers[0]
    assert Path(str(widget.store.value)) == tmp_path / "cells.tif.channel0.ivoma.zarr"
    widget.start_session()
    draw_path(widget, 0, 1, [[22, 14], [22, 26]])
    labels = widget.scribbles_to_mask(0)
    assert iou(labels == 1, truth[0] == 1) > 0.8
    assert is_mask_store(tmp_path / "cells.tif.channel0.ivoma.zarr")
    assert "[channel 0]" in widget.session.store.attrs["provenance"]["source"]


# --------------------------------------------------------------------------- layer conversions
def test_shape_outlines_and_frames():
    rect = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)
    closed = shape_outline(rect, "rectangle")
    assert len(closed) == 5 and np.array_equal(closed[0], closed[-1])
    ellipse = shape_outline(np.array([[0, 0], [0, 20], [10, 20], [10, 0]], float), "ellipse")
    centre = ellipse.mean(axis=0)
    np.testing.assert_allclose(centre, [5, 10], atol=0.3)
    radii = (ellipse - [5, 10]) / [5, 10]
    np.testing.assert_allclose(np.hypot(radii[:, 0], radii[:, 1]), 1.0, atol=1e-6)
    path = np.array([[3, 1, 1], [3, 5, 5]], float)
    np.testing.assert_array_equal(shape_outline(path, "path"), path[:, 1:])
    data = [np.array([[0.2, 1, 1], [0.2, 2, 2]]), np.array([[2.9, 1, 1]]), np.array([[1, 1], [2, 2]])]
    assert shapes_on_frame(data, 0) == [0, 2]
    assert shapes_on_frame(data, 3) == [1, 2]


def test_frames_in_paint_event():
    atom = ((np.array([4, 4, 6]), np.array([1, 2, 3]), np.array([1, 2, 3])), np.zeros(3), 1)
    assert frames_in_paint_event([atom]) == {4, 6}
    assert frames_in_paint_event([], fallback=2) == {2}


def test_scribbles_from_brush_components():
    painted = np.zeros((20, 30), np.uint32)
    painted[2:4, 2:20] = 1  # object 1
    painted[10:12, 5:25] = BRUSH_BACKGROUND  # background
    painted[15:17, 1:5] = 1  # object 1, second stroke
    painted[6, 26] = 7  # a dot of object 7
    scribbles = scribbles_from_brush(painted)
    assert sorted(s.object_id for s in scribbles) == [0, 1, 1, 7]
    for s in scribbles:
        r, c = np.rint(s.points).astype(int).T
        expected = BRUSH_BACKGROUND if s.object_id == 0 else s.object_id
        assert np.all(painted[r, c] == expected)
    with pytest.raises(ValueError, match="one"):
        scribbles_from_brush(np.zeros((2, 5, 5), np.uint32))


@pytest.mark.parametrize("size", [1, 3, 9, 24])
def test_every_painted_pixel_is_a_constraint(size):
    # a brush stroke of ``size`` px along a curve: its scribbles cover every painted pixel and
    # reach little beyond it (under 5% of its area, 2 px at most)
    from napari_ivoma.engine.scribbles import rasterize_scribbles

    rr, cc = np.mgrid[:120, :160]
    painted = np.zeros((120, 160), np.uint32)
    for t in np.linspace(0, 1, 200):
        r, c = 30 + 60 * t, 20 + 120 * t + 20 * np.sin(6 * t)
        painted[(rr - r) ** 2 + (cc - c) ** 2 <= (size / 2) ** 2] = 3
    scribbles = scribbles_from_brush(painted)
    covered = rasterize_scribbles(scribbles, painted.shape, 1) >= 0
    assert covered[painted > 0].all()
    beyond = ndi.distance_transform_edt(painted == 0)[covered]
    if size > 3:  # (thin strokes are lines drawn 3 px wide, as the engine draws every line)
        assert beyond.max() <= 2.0 and (beyond > 0).sum() <= 0.05 * (painted > 0).sum()
    if size <= 1:
        assert all(np.all(s.width == 0) for s in scribbles)  # a one-pixel line stays a line


def test_brush_polylines_never_jump():
    """A curved thick stroke becomes polylines whose consecutive points are pixel neighbours."""
    painted = np.zeros((40, 40), np.uint32)
    yy, xx = np.mgrid[:40, :40]
    ring = np.abs(np.hypot(yy - 20, xx - 20) - 12) <= 2
    painted[ring & (xx < 26)] = 3  # a "C": rows are crossed twice
    painted[18:22, 2:10] = 3  # a branch
    scribbles = scribbles_from_brush(painted)
    assert {s.object_id for s in scribbles} == {3}
    covered = set()
    for s in scribbles:
        steps = np.abs(np.diff(s.points, axis=0)).max(axis=1) if len(s.points) > 1 else np.zeros(0)
        assert np.all(steps <= 1)
        covered.update(map(tuple, np.rint(s.points).astype(int)))
    assert all(painted[r, c] == 3 for r, c in covered)
    assert len(covered) > 30  # the whole C and its branch, not one piece


def test_skeleton_chains_cover_every_pixel():
    pixels = np.array([[0, 0], [0, 1], [0, 2], [1, 1], [2, 1], [5, 5]])  # a T and a lone dot
    chains = skeleton_chains(pixels)
    seen = {tuple(p) for c in chains for p in c}
    assert seen == {tuple(p) for p in pixels}
    for c in chains:
        assert np.all(np.abs(np.diff(c, axis=0)).max(axis=1, initial=0) <= 1)


def test_frames_before_paint_takes_edits_back():
    before = np.zeros((3, 10, 10), np.uint32)
    before[1, 2:5, 2:5] = 2
    now = before.copy()
    now[1, 3:7, 3:7] = 4  # first atom: box, some pixels were 2
    mask = np.zeros((1, 4, 4), bool)
    mask[0] = True
    old1 = before[1:2, 3:7, 3:7][mask]

    class Atom:  # napari's masked atom
        def __init__(self, slice_key, mask, old_values):
            self.slice_key, self.mask, self.old_values, self.new_value = slice_key, mask, old_values, 4

    atom1 = Atom((slice(1, 2), slice(3, 7), slice(3, 7)), mask, old1)
    mid = now.copy()
    now[1, 0, 0] = 9  # second atom: a fancy-index tuple
    atom2 = ((np.array([1]), np.array([0]), np.array([0])), mid[1, 0, 0:1].copy(), 9)
    got = frames_before_paint([atom1, atom2], {1: now[1]})
    np.testing.assert_array_equal(got[1], before[1])
    assert now[1, 0, 0] == 9  # input untouched
    whole = Atom((slice(1, 2), slice(3, 7), slice(3, 7)), None, before[1:2, 3:7, 3:7].copy())
    np.testing.assert_array_equal(frames_before_paint([whole], {1: mid[1]})[1], before[1])


def test_proposed_objects_listed_and_named_with_a_stroke(make_napari_viewer, tmp_path):
    from conftest import cells_clip

    frames, truth = cells_clip()
    viewer = make_napari_viewer()
    image = viewer.add_image(frames, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.image.value = image
    widget.store.value = tmp_path / "cells.ivoma.zarr"
    widget.start_session()
    session = widget.session
    session.set_labels(0, np.where(truth[0] == 3, 0, truth[0]))
    widget.propagate(block=True)
    [pid] = session.proposals
    assert "proposed" in widget.objects_info.value and str(pid) in widget.objects_info.value
    rr, cc = np.nonzero(truth[9] == 3)
    row = int(np.median(rr))
    draw_path(widget, 9, 7, [[row, cc[rr == row].min() + 2], [row, cc[rr == row].max() - 2]])
    widget.scribbles_to_mask(9, block=True)
    assert session.proposals == {}
    assert "proposed" not in widget.objects_info.value
    assert iou(np.asarray(widget.masks_layer.data[12]) == 7, truth[12] == 3) > 0.8


def test_shown_frame_is_prepared_for_scribbles(annotator, qtbot):
    """Showing a frame prepares it in the background (features, motion) once the view rests on
    it, so the strokes drawn on it are answered sooner; the mask is the one an unprepared
    session makes."""
    viewer, widget, frames, truth = annotator
    widget.start_session()
    session = widget.session
    for t in (1, 2, 3, 4, 5):  # scrolling: only where the view rests is prepared
        viewer.dims.current_step = (t, 0, 0)
    qtbot.waitUntil(lambda: 5 in session._prepared, timeout=5000)
    assert not {1, 2, 3, 4} & set(session._prepared)
    session._prepared[5].result(timeout=60)
    draw_path(widget, 5, 1, [[15, 25], [22, 37], [29, 27]])
    draw_path(widget, 5, 0, [[4, 4], [4, 84], [60, 84], [60, 4]])
    labels = widget.scribbles_to_mask(block=True)
    fresh = Session(session.frames).add_scribbles(5, session.scribbles(5))
    np.testing.assert_array_equal(labels, fresh)
    assert iou(labels == 1, truth[5] == 1) > 0.7


def test_export_button_writes_the_masks_and_refuses_to_overwrite(annotator, tmp_path, monkeypatch, qtbot):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    session = widget.session
    session.set_labels(0, truth[0])
    session.set_labels(7, truth[7])
    masks = widget.masks_layer
    viewer.dims.current_step = (4, 0, 0)
    masks.paint((4, 10, 10), 3)  # a hand edit not yet sent: the export must hold it
    out = tmp_path / "exported"
    monkeypatch.setattr(AnnotatorWidget, "_ask_export_folder", lambda self, session: str(out))
    widget.export_format.value = "tif"
    widget.export_button.changed.emit(True)  # runs in a worker thread
    qtbot.waitUntil(lambda: not widget._busy, timeout=60_000)
    assert "exported 8 frames (tif: mask000.tif ... mask007.tif)" in widget.status.value, widget.status.value
    back = np.stack([tifffile.imread(out / f"mask{t:03d}.tif") for t in range(8)])
    np.testing.assert_array_equal(back[[0, 7]], truth[[0, 7]])
    assert (back[4] == 3).sum() > 10 and session.references.get(4) == "user"
    assert widget.progress.value == widget.progress.max
    stamp = (out / "mask000.tif").stat().st_mtime_ns
    widget.export_masks(out, "tif", block=True)  # again into the same folder: refused
    assert "already holds mask000.tif" in widget.status.value
    assert (out / "mask000.tif").stat().st_mtime_ns == stamp
    assert widget.export_button.enabled and widget.propagate_button.enabled
    monkeypatch.setattr(AnnotatorWidget, "_ask_export_folder", lambda self, session: "")
    assert widget.export_masks() is None  # the folder dialog cancelled: nothing happens


def test_export_can_be_cancelled_from_the_widget(annotator, tmp_path):
    viewer, widget, frames, truth = annotator
    widget.start_session()
    widget.session.set_labels(0, truth[0])

    def stop_after_two(done, total):
        if done == 2:
            widget.cancel()

    widget._bridge.progress.connect(stop_after_two)
    widget.export_masks(tmp_path / "out", "png", block=True)
    assert "export cancelled: 2 of 8 frames written" in widget.status.value, widget.status.value
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.png", "00001.png"]
    widget.export_masks(tmp_path / "stack", "tif-stack", block=True)
    assert "not kept" in widget.status.value and not any((tmp_path / "stack").iterdir())
    assert widget.export_button.enabled


def test_a_colony_of_objects_and_proposals_keeps_the_panel_narrow(annotator):
    # 40 nuclei and a dozen proposals: every id listed on a few wrapped lines, the proposals
    # summarised, and the panel asks for no more width (napari's dock would take it from the canvas)
    viewer, widget, frames, truth = annotator
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_window.show()  # (size hints are laid out on a shown window)
    widget.start_session()
    QApplication.processEvents()
    width = widget.native.sizeHint().width()
    session = widget.session
    h, w = frames.shape[1:3]
    clicks = [Scribble(k, [[8 + (k - 1) // 8 * (h - 16) // 5, 8 + (k - 1) % 8 * (w - 16) // 8]]) for k in range(1, 41)]
    session.add_scribbles(0, clicks)
    store = session.store
    for pid in range(41, 53):  # proposals as propagation records them
        store.ensure_object(pid)
        store.attrs["objects"][str(pid)].update(name=f"proposal {pid}", proposal={"frames": [1, 3]})
    widget._update_info()
    QApplication.processEvents()  # (the labels' new size hints take effect once laid out)
    assert widget.native.sizeHint().width() <= width + 10
    text = widget.objects_info.value
    for k in range(1, 41):
        assert f"</span> {k}</span>" in text
    assert "proposed: 41 (frames 1-3)" in text and "(12 in all)" in text and "52 (frames" not in text
