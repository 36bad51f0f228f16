"""The napari dock widget: scribbles -> masks -> propagation -> corrections.

Thin glue: every decision about masks is taken by :class:`napari_ivoma.engine.Session`; this
module moves data between napari layers and the session and keeps the GUI responsive.

Layers used
-----------
``scribbles`` (Shapes, path mode)
    Strokes with an ``object_id`` feature (0 = background); the edge colour follows the id.
``scribble brush`` (Labels, one (H, W) frame)
    Freehand strokes for the frame shown when Scribbles -> mask is pressed: value ``k`` is
    object ``k``, :data:`~napari_ivoma._layers.BRUSH_BACKGROUND` (65535, white) is background,
    0 erases.  The object id box sets the brush value.  Cleared once used.
``masks`` (Labels)
    Backed by the session's zarr store: brush edits are written to disk as they happen and
    become user references before the next step; Undo restores the pixels they replaced.

Keyboard shortcuts (on the viewer): Shift-M scribbles -> mask, Shift-G propagate,
Shift-Up / Shift-Down object id +/- 1.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QSizePolicy

from ._layers import (
    BACKGROUND_COLOUR,
    BRUSH_BACKGROUND,
    default_store_path,
    frames_before_paint,
    frames_in_paint_event,
    scribbles_from_brush,
    scribbles_from_shapes,
)
from ._reader import CHANNEL_KEY, SOURCE_KEY
from .engine import Session
from .engine.export import EXPORT_FORMATS
from .engine.store import object_areas

if TYPE_CHECKING:
    import napari

__all__ = ["AnnotatorWidget"]

SCRIBBLES_NAME = "scribbles"
BRUSH_NAME = "scribble brush"
MASKS_NAME = "masks"
REFRESH_INTERVAL_S = 0.5


class _Bridge(QObject):
    """Carries progress from the propagation thread to the GUI thread (queued signal)."""

    progress = Signal(int, int)


class AnnotatorWidget(Container):
    """Dock widget of napari-ivoma (Plugins > Annotate video (napari-ivoma))."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.session: Session | None = None
        self.image_layer = None
        self.shapes_layer = None
        self.brush_layer = None
        self.masks_layer = None
        self.edited_frames: set[int] = set()
        self._before_edit: dict[int, np.ndarray] = {}
        self._worker = None
        self._cancel = threading.Event()
        self._last_refresh = 0.0
        self._last_result = None
        self._bridge = _Bridge()
        self._bridge.progress.connect(self._on_progress)
        # a frame is prepared once the view rests on it (not on every step of playback)
        self._prepare_timer = QTimer()
        self._prepare_timer.setSingleShot(True)
        self._prepare_timer.setInterval(150)
        self._prepare_timer.timeout.connect(self._prepare_shown_frame)
        self._build()
        self._connect_viewer()
        self._bind_keys()
        self._update_info()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.image = ComboBox(label="video", choices=self._image_choices,
                              tooltip="Image layer holding the frames (T, H, W[, C])")
        self.store = FileEdit(label="mask store", mode="w", filter="*.zarr",
                              tooltip="Folder of the zarr mask store (created, or resumed if it exists)")
        self.start_button = PushButton(text="Start / resume")
        self.object_id = SpinBox(value=1, min=0, max=BRUSH_BACKGROUND - 1,
                                 tooltip="Id of new scribbles (paths and brush): 0 = background, 1, 2, ... "
                                         "objects (Shift-Up / Shift-Down)")
        self.object_hint = Label(value="")
        id_row = Container(layout="horizontal", labels=False, widgets=[self.object_id, self.object_hint],
                           label="object id")
        self.to_mask_button = PushButton(text="Scribbles → mask",
                                         tooltip="Mask of the current frame (CPSM, Shift-M) from\n"
                                                 "· the paths on the 'scribbles' layer drawn on this frame\n"
                                                 "· the strokes on the 'scribble brush' layer (painted value k = "
                                                 f"object k, {BRUSH_BACKGROUND} = background; the object id box "
                                                 "sets it)\nUsed strokes are removed from both layers.")
        self.draw_hint = Label(label="draw", value=(
            f"paths on '{SCRIBBLES_NAME}' or paint on '{BRUSH_NAME}' with the object id's colour "
            "(white = background)"))
        self.propagate_button = PushButton(
            text="Propagate",
            tooltip="Propagate the reference masks over the video (MRGS, Shift-G)")
        self.cancel_button = PushButton(text="Cancel", enabled=False,
                                        tooltip="Stop the propagation (frames done so far keep their masks) or the export")
        self.undo_button = PushButton(
            text="Undo",
            tooltip="Undo the last step (scribbles, hand edits, removed reference) and the propagation after it")
        self.remove_ref_button = PushButton(
            text="Remove reference",
            tooltip="The current frame stops being a reference: its scribbles are forgotten and the "
                    "next propagation recomputes it (undoable)")
        self.export_format = ComboBox(
            choices=list(EXPORT_FORMATS), value="png",
            tooltip="png: one palette PNG per frame (00000.png, ...: DAVIS layout)\n"
                    "tif: one 16-bit TIFF per frame (mask000.tif, ...: Cell Tracking Challenge layout)\n"
                    "tif-stack: one multi-page TIFF (masks.tif) that Fiji opens as a stack\n"
                    "ctc: a Cell Tracking Challenge result: mask000.tif, ... and the lineage table\n"
                    "res_track.txt (an object missing for some frames or divided gets a new label after)\n"
                    "csv: one table (objects.csv): each object's area, centroid and box on every frame")
        self.export_button = PushButton(
            text="Export masks ...",
            tooltip="Write every frame's masks into a folder you choose, in the format on the left "
                    "(files already there are never replaced)")
        self.import_layer = ComboBox(
            choices=self._labels_choices,
            tooltip="A Labels layer with masks made elsewhere (Cellpose, StarDist, another annotator): "
                    "(H, W), or (T, H, W) for the whole video")
        self.import_button = PushButton(
            text="Use on this frame",
            tooltip="The chosen layer's masks become the current frame's masks, a reference made by "
                    "you (Undo reverts it); then Propagate")
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(label="status", value="choose a video and press Start / resume")
        self.references = Label(label="references", value="-")
        self.objects_info = Label(label="objects", value="-")
        row1 = Container(layout="horizontal", labels=False, widgets=[self.to_mask_button])
        row2 = Container(layout="horizontal", labels=False,
                         widgets=[self.propagate_button, self.cancel_button])
        row3 = Container(layout="horizontal", labels=False,
                         widgets=[self.undo_button, self.remove_ref_button])
        row4 = Container(layout="horizontal", labels=False, widgets=[self.export_format, self.export_button])
        row5 = Container(layout="horizontal", labels=False, widgets=[self.import_layer, self.import_button])
        for row in (id_row, row1, row2, row3, row4, row5):
            row.margins = (0, 0, 0, 0)
        row1.label, row2.label, row3.label, row4.label, row5.label = "", "", "", "export", "masks from"
        self.extend([self.image, self.store, self.start_button, id_row, self.draw_hint, row1, row2, row3,
                     row5, row4, self.progress, self.status, self.references, self.objects_info])
        for lab in (self.status, self.references, self.objects_info, self.object_hint, self.draw_hint):
            lab.native.setWordWrap(True)
            # wrapped to the panel's width: a long text (many proposed objects) must not ask for
            # a wider panel, which napari's dock grants by shrinking the canvas
            policy = QSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
            policy.setHeightForWidth(True)
            lab.native.setSizePolicy(policy)
        self.objects_info.native.setTextFormat(Qt.RichText)
        self.image.changed.connect(self._on_image_changed)
        self.start_button.changed.connect(lambda: self._guarded(self.start_session))
        self.to_mask_button.changed.connect(lambda: self._guarded(lambda: self.scribbles_to_mask(block=False)))
        self.propagate_button.changed.connect(lambda: self._guarded(self.propagate))
        self.cancel_button.changed.connect(self.cancel)
        self.undo_button.changed.connect(lambda: self._guarded(self.undo))
        self.remove_ref_button.changed.connect(lambda: self._guarded(self.remove_reference))
        self.export_button.changed.connect(lambda: self._guarded(self.export_masks))
        self.import_button.changed.connect(lambda: self._guarded(self.use_layer_masks))
        self.object_id.changed.connect(self._on_object_id)
        self._on_image_changed()
        self._set_busy(False)

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._reset_layer_choices)
        events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._on_frame_shown)

    def _on_frame_shown(self, event=None) -> None:
        """A frame is shown: prepare it for scribbles once the view rests on it (150 ms)."""
        if self.session is not None:
            self._prepare_timer.start()

    def _prepare_shown_frame(self) -> None:
        """Prepare the shown frame in the background (features, motion), so that the strokes
        drawn on it turn into a mask sooner."""
        if self.session is not None and not self._busy:
            self.session.prepare(self.current_frame())

    def _bind_keys(self) -> None:
        bindings: dict[str, Callable[[], Any]] = {
            "Shift-M": lambda: self.scribbles_to_mask(block=False),
            "Shift-G": self.propagate,
            "Shift-Up": lambda: self._step_object_id(+1),
            "Shift-Down": lambda: self._step_object_id(-1),
        }
        for key, action in bindings.items():
            self.viewer.bind_key(key, _key_handler(self, action), overwrite=True)

    def _image_choices(self, _widget=None) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _labels_choices(self, _widget=None) -> list:
        """Labels layers other than the session's own (masks, scribble brush)."""
        from napari.layers import Labels

        own = (self.masks_layer, self.brush_layer)
        return [layer for layer in self.viewer.layers
                if isinstance(layer, Labels) and not any(_unwrap(layer) is o for o in own if o is not None)]

    def _reset_layer_choices(self, event=None) -> None:
        """The layer lists (video, masks from) after a layer came or went."""
        self.image.reset_choices()
        self.import_layer.reset_choices()

    def _on_layer_removed(self, event=None) -> None:
        removed = _unwrap(getattr(event, "value", None))
        if removed is not None and removed is self.shapes_layer:
            self.shapes_layer = None
        if removed is not None and removed is self.brush_layer:
            self.brush_layer = None
        if removed is not None and removed in (self.masks_layer, self.image_layer):
            what = "masks" if removed is self.masks_layer else "video"
            if removed is self.masks_layer:
                self.masks_layer = None
            self._guarded(lambda: self.close_session(
                f"the {what} layer was removed: session closed (masks kept in the store; "
                "Start / resume to continue)"))
        self._reset_layer_choices()

    def close_session(self, status: str = "session closed") -> None:
        """Send pending hand edits, stop a running propagation and close the session."""
        session = self.session
        if session is None:
            return
        self._cancel.set()
        try:
            self.commit_hand_edits()
        finally:
            self.session = None
            self.image_layer = None
            self._before_edit.clear()
            self.edited_frames.clear()
            session.close()
            self._set_status(status)
            self._update_info()

    def _on_image_changed(self, _value=None) -> None:
        layer = self.image.value
        if layer is None or self.session is not None:
            return
        self.store.value = default_store_path(_layer_source(layer), layer.name, channel=_layer_channel(layer))

    # ------------------------------------------------------------------ actions
    def start_session(self) -> Session:
        """Create (or resume) the session of the chosen Image layer with the chosen store."""
        layer = self.image.value
        if layer is None:
            raise ValueError("no Image layer to annotate: open a video first (File > Open)")
        if self._busy:
            raise RuntimeError("a propagation is running; cancel it first")
        if getattr(layer, "multiscale", False):
            raise ValueError(f"{layer.name!r} is multiscale; napari-ivoma needs a single-scale video")
        data = layer.data
        ndim_video = 4 if layer.rgb else 3
        if data.ndim != ndim_video:
            raise ValueError(
                f"{layer.name!r} has shape {tuple(data.shape)}: napari-ivoma needs a video "
                f"(T, H, W) or (T, H, W, C); open a video, image folder or TIFF stack"
            )
        store = Path(str(self.store.value)).expanduser() if str(self.store.value) not in ("", ".") else None
        if store is None:
            raise ValueError("choose where to keep the masks (mask store path)")
        store.parent.mkdir(parents=True, exist_ok=True)
        self.commit_hand_edits()
        source, channel = _layer_source(layer), _layer_channel(layer)
        if source is not None and channel is not None:
            source = f"{source} [channel {channel}]"
        session = Session(data, store=str(store), source=source)
        if self.session is not None:  # replaced: the old one is done
            self.close_session()
        self.session = session
        self.image_layer = _unwrap(layer)
        self.edited_frames.clear()
        self._before_edit.clear()
        self._setup_layers()
        n_refs = len(session.references)
        verb = "resumed" if n_refs else "started"
        self._set_status(f"session {verb}: {session.n_frames} frames, {n_refs} reference(s)")
        self._update_info()
        self._on_frame_shown()
        return session

    def scribbles_to_mask(self, t: int | None = None, block: bool = True):
        """Turn the scribbles on frame ``t`` (default: the current frame) into its mask.

        ``block=True`` returns the (H, W) labels; ``block=False`` (the button) runs CPSM in a
        worker thread and returns the worker.
        """
        session = self._require_session()
        if self._busy:
            raise RuntimeError("wait for the running step to finish")
        t = self.current_frame() if t is None else int(t)
        scribbles, idx = ([], []) if self.shapes_layer is None else scribbles_from_shapes(self.shapes_layer, t)
        brushed = self._brush_scribbles()
        scribbles = scribbles + brushed
        if not scribbles:
            raise ValueError(
                f"no scribbles on frame {t}: draw paths on the '{SCRIBBLES_NAME}' layer or paint on "
                f"the '{BRUSH_NAME}' layer (object id 0 = background) first"
            )
        self.commit_hand_edits()

        def done(labels: np.ndarray) -> None:
            if self.shapes_layer is not None and idx:
                self.shapes_layer.editable = True
                self._remove_shapes(idx)
            if brushed:
                self._clear_brush()
            self._refresh_masks()
            ids = sorted({s.object_id for s in scribbles})
            self._set_status(f"frame {t}: mask from {len(scribbles)} scribble(s), ids {ids}")
            self._update_info()
            self._last_result = labels

        worker = self._launch(session.add_scribbles, (t, scribbles), done,
                              f"frame {t}: scribbles → mask ...", block, cancellable=False)
        return self._last_result if block else worker

    def propagate(self, block: bool = False):
        """Propagate the references over the video in a worker thread.

        Returns the worker (``block=True`` waits for it, for scripts and tests).
        """
        session = self._require_session()
        if self._busy:
            raise RuntimeError("wait for the running step to finish")
        self.commit_hand_edits()
        if not session.user_references:
            raise ValueError("nothing to propagate: make a mask on a frame first (Scribbles → mask)")
        self._cancel.clear()
        self.progress.max = session.n_frames
        self.progress.value = 0
        return self._launch(self._run_propagation, (session,), self._on_propagated,
                            "propagating ...", block, cancellable=True)

    def _launch(self, fn: Callable, args: tuple, on_returned: Callable, status: str, block: bool,
                cancellable: bool):
        """Run ``fn(*args)`` in a napari worker thread (or here when ``block``)."""
        from napari.qt.threading import create_worker

        # errors go to the status line and one notification (_on_worker_error), not re-raised
        # into Qt's event loop as well
        worker = create_worker(fn, *args, _start_thread=False, _connect={"errored": self._on_worker_error})
        worker.returned.connect(on_returned)
        worker.finished.connect(lambda: self._set_busy(False))
        self._worker = worker
        self._last_result = None
        self._set_busy(True, cancellable=cancellable)
        self._set_status(status)
        if block:
            worker.run()
        else:
            worker.start()
        return worker

    def export_masks(self, folder: str | Path | None = None, fmt: str | None = None, block: bool = False):
        """Write the masks of every frame into ``folder`` (asked with a dialog when None) in
        ``fmt`` (default: the format box), in a worker thread with progress; Cancel stops it.

        Pending hand edits are committed first, so the files hold what the viewer shows.
        Returns the worker (None when the dialog was cancelled).
        """
        session = self._require_session()
        if self._busy:
            raise RuntimeError("wait for the running step to finish (or cancel it)")
        fmt = fmt or self.export_format.value
        if folder is None:
            folder = self._ask_export_folder(session)
            if not folder:
                return None
        self.commit_hand_edits()
        self._cancel.clear()
        self.progress.max = session.n_frames
        self.progress.value = 0
        return self._launch(self._run_export, (session, Path(folder), fmt), self._on_exported,
                            f"exporting the masks as {fmt} ...", block, cancellable=True)

    def _ask_export_folder(self, session: Session) -> str:
        from qtpy.QtWidgets import QFileDialog

        start = str(Path(session.store_path).parent) if session.store_path else str(Path.home())
        return QFileDialog.getExistingDirectory(self.native, "Export the masks into this folder", start)

    def _run_export(self, session: Session, folder: Path, fmt: str):
        def progress(done: int, total: int) -> None:
            self._bridge.progress.emit(int(done), int(total))

        paths = session.export_masks(folder, fmt, progress=progress, cancel=self._cancel)
        return folder, fmt, paths, self._cancel.is_set()

    def _on_exported(self, result: tuple) -> None:
        folder, fmt, paths, cancelled = result
        n = self.session.n_frames if self.session is not None else len(paths)
        if fmt in ("tif-stack", "csv"):
            name = "masks.tif" if fmt == "tif-stack" else "objects.csv"
            text = (f"export cancelled: the unfinished {folder / name} is not kept" if cancelled
                    else f"exported {n} frames to {paths[0]}")
        else:
            text = (f"export cancelled: {len(paths)} of {n} frames written to {folder}"
                    + (" (no res_track.txt)" if fmt == "ctc" else "") if cancelled
                    else f"exported {n} frames ({fmt}: {paths[0].name} ... {paths[-1].name}) to {folder}")
        if not cancelled:
            self.progress.value = self.progress.max
        self._set_status(text)

    def cancel(self) -> None:
        """Ask a running propagation or export to stop (frames not reached keep their masks)."""
        self._cancel.set()
        if self._busy:
            self._set_status("cancelling ...")

    def undo(self) -> int:
        """Undo the last action of the session; returns the frame it was on."""
        session = self._require_session()
        if self._busy:
            raise RuntimeError("wait for the propagation to finish (or cancel it) before undoing")
        pending = self.commit_hand_edits()
        if pending:  # brush edits not yet sent: they are the last action, undo them all
            for _ in pending:
                t = session.undo()
            what = f"hand edit(s) on frame(s) {', '.join(map(str, pending))}"
        else:
            t = session.undo()
            what = f"last action on frame {t}"
        self._refresh_masks()
        self._set_status(f"undone: {what}")
        self._update_info()
        return t

    def use_layer_masks(self, layer=None, t: int | None = None) -> np.ndarray:
        """The masks of a Labels ``layer`` (default: the one chosen) become frame ``t``'s
        (default: the current frame): a user reference, undoable.

        The layer is (H, W), or (T, H, W) for the whole video (its frame ``t`` is taken).
        """
        session = self._require_session()
        if self._busy:
            raise RuntimeError("wait for the running step to finish (or cancel it)")
        layer = self.import_layer.value if layer is None else layer
        if layer is None:
            raise ValueError("no Labels layer to take masks from: open or add one (File > Open)")
        t = self.current_frame() if t is None else int(t)
        data = layer.data
        shape = (session.height, session.width)
        if tuple(data.shape) == shape:
            labels = np.asarray(data)
        elif tuple(data.shape) == (session.n_frames, *shape):
            labels = np.asarray(data[t])
        else:
            raise ValueError(f"{layer.name!r} has shape {tuple(data.shape)}: masks for this video are "
                             f"{shape} (one frame) or {(session.n_frames, *shape)} (every frame)")
        self.commit_hand_edits()
        session.set_labels(t, labels)
        self._refresh_masks()
        n = len(object_areas(labels))
        self._set_status(f"frame {t}: {n} object(s) from {layer.name!r}, a reference made by you "
                         "(Undo reverts it): Propagate to carry them over the video")
        self._update_info()
        return np.asarray(session.labels[t])

    def remove_reference(self, t: int | None = None) -> int:
        """Frame ``t`` (default: the current frame) stops being a reference (undoable).

        Its scribbles are forgotten and the next propagation recomputes its mask from the
        neighbouring references.
        """
        session = self._require_session()
        if self._busy:
            raise RuntimeError("wait for the running step to finish (or cancel it)")
        t = self.current_frame() if t is None else int(t)
        self.commit_hand_edits()
        if t not in session.references:
            raise ValueError(f"frame {t} is not a reference frame (references: "
                             f"{', '.join(map(str, session.references)) or 'none'})")
        session.remove_reference(t)
        self._set_status(f"frame {t} is no longer a reference: Propagate to recompute it")
        self._update_info()
        return t

    def commit_hand_edits(self) -> list[int]:
        """Make every frame painted by hand since the last call a user reference."""
        if self.session is None or not self.edited_frames:
            return []
        done = []
        for t in sorted(self.edited_frames):
            if 0 <= t < self.session.n_frames:
                previous = self._before_edit.get(t)
                self.session.set_labels(t, np.asarray(self.session.labels[t]), previous=previous)
                done.append(t)
        self.edited_frames.clear()
        self._before_edit.clear()
        if self.masks_layer is not None:
            _forget_layer_history(self.masks_layer)  # the session's undo takes over
        self._update_info()
        return done

    def current_frame(self) -> int:
        """Index of the frame shown in the viewer (time = first axis of the video)."""
        layer = self.image_layer or self.image.value
        n = self.session.n_frames if self.session is not None else None
        try:
            t = int(np.rint(layer.world_to_data(self.viewer.dims.point)[0]))
        except Exception:  # noqa: BLE001 - fall back to the viewer's step
            t = int(self.viewer.dims.current_step[0])
        return max(0, min(t, n - 1)) if n else max(t, 0)

    # ------------------------------------------------------------------ propagation worker
    def _run_propagation(self, session: Session):
        def progress(done: int, total: int) -> None:
            self._bridge.progress.emit(int(done), int(total))

        session.propagate(progress=progress, cancel=self._cancel)
        return self._cancel.is_set()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = min(done, max(total, 1))
        now = time.monotonic()
        if now - self._last_refresh >= REFRESH_INTERVAL_S:
            self._last_refresh = now
            self._refresh_masks()

    def _on_propagated(self, cancelled: bool) -> None:
        self._refresh_masks()
        self.progress.value = self.progress.max if not cancelled else self.progress.value
        self._set_status("propagation cancelled (frames not reached keep their masks)" if cancelled
                         else "propagation done")
        self._update_info()

    def _on_worker_error(self, exc: BaseException) -> None:
        self._set_busy(False)
        self._refresh_masks()
        self._report(exc)

    # ------------------------------------------------------------------ layers
    def _setup_layers(self) -> None:
        image = self.image_layer
        transform = {"scale": image.scale, "translate": image.translate}
        self.shapes_layer = self._find_layer(SCRIBBLES_NAME, "Shapes")
        if self.shapes_layer is None:
            self.shapes_layer = _unwrap(self.viewer.add_shapes(
                name=SCRIBBLES_NAME, ndim=3, shape_type="path", edge_width=3, face_color="transparent",
                features={"object_id": np.zeros(0, dtype=int)}, **transform,
            ))
        elif "object_id" not in self.shapes_layer.features:
            n = len(self.shapes_layer.data)
            self.shapes_layer.features = {"object_id": np.full(n, self.object_id.value, dtype=int)}
        self._setup_brush_layer()
        masks = self._find_layer(MASKS_NAME, "Labels")
        if masks is None:
            masks = _unwrap(self.viewer.add_labels(self.session.labels, name=MASKS_NAME, opacity=0.5,
                                                   **transform))
        else:
            masks.data = self.session.labels
        if self.masks_layer is not masks:
            masks.events.paint.connect(self._on_paint)
        self.masks_layer = masks
        self._stack_layers()
        self._name_axes()
        self.viewer.layers.selection.active = self.shapes_layer
        self.shapes_layer.mode = "add_path"
        self._on_object_id()
        self.import_layer.reset_choices()  # (not the session's own layers)

    def _stack_layers(self) -> None:
        """Bottom to top: video, masks, scribble brush, scribbles (strokes stay visible)."""
        layers = self.viewer.layers
        order = [self.image_layer, self.masks_layer, self.brush_layer, self.shapes_layer]
        try:
            for below, above in zip(order[:-1], order[1:]):
                if layers.index(above) < layers.index(below):
                    layers.move(layers.index(above), layers.index(below) + 1)
        except ValueError:  # a layer is not in the list any more
            pass

    def _name_axes(self) -> None:
        """Call the first (time) axis ``t`` when the viewer's axes have default names."""
        dims = self.viewer.dims
        labels = list(dims.axis_labels)
        default = [str(i) for i in range(len(labels))], [str(i - len(labels)) for i in range(len(labels))]
        if len(labels) == 3 and labels in default:
            dims.axis_labels = ("t", "y", "x")

    def _setup_brush_layer(self) -> None:
        """The (H, W) 'scribble brush' Labels layer: object k is painted with value k,
        background with BRUSH_BACKGROUND; used on the frame shown at Scribbles → mask."""
        image = self.image_layer
        shape = (self.session.height, self.session.width)
        brush = self._find_layer(BRUSH_NAME, "Labels")
        if brush is not None and tuple(brush.data.shape) != shape:
            self.viewer.layers.remove(brush)
            brush = None
        if brush is None:
            brush = _unwrap(self.viewer.add_labels(
                np.zeros(shape, np.uint32), name=BRUSH_NAME, opacity=0.9,
                scale=image.scale[-2:], translate=image.translate[-2:],
            ))
            brush.brush_size = 5
        self.brush_layer = brush

    def _brush_colormap(self, object_id: int):
        from napari.utils.colormaps import DirectLabelColormap

        ids = set(self.session.objects if self.session is not None else ()) | {int(object_id)}
        colours = {None: "#808080", 0: "transparent", BRUSH_BACKGROUND: BACKGROUND_COLOUR}
        colours.update({oid: self.colour_of(oid) for oid in ids if 0 < oid < BRUSH_BACKGROUND})
        return DirectLabelColormap(color_dict=colours)

    def _brush_scribbles(self) -> list:
        """Scribbles painted on the scribble brush layer (see :func:`scribbles_from_brush`)."""
        if self.brush_layer is None:
            return []
        return scribbles_from_brush(np.asarray(self.brush_layer.data), background_value=BRUSH_BACKGROUND)

    def _clear_brush(self) -> None:
        layer = self.brush_layer
        if layer is not None:
            layer.data = np.zeros_like(np.asarray(layer.data))
            _forget_layer_history(layer)

    def _find_layer(self, name: str, kind: str):
        for layer in self.viewer.layers:
            if layer.name == name and type(_unwrap(layer)).__name__ == kind:
                return _unwrap(layer)
        return None

    def _remove_shapes(self, idx: list[int]) -> None:
        layer = self.shapes_layer
        layer.selected_data = set(idx)
        layer.remove_selected()

    def _refresh_masks(self) -> None:
        if self.masks_layer is not None:
            if not self.edited_frames:
                _forget_layer_history(self.masks_layer)  # the store changed under napari's undo
            self.masks_layer.refresh()

    def _on_paint(self, event) -> None:
        item = getattr(event, "value", None)
        frames = frames_in_paint_event(item, fallback=self._safe_frame())
        new = [t for t in frames if t not in self._before_edit and 0 <= t < self.masks_layer.data.shape[0]]
        if new:  # first stroke on these frames since the last sync: keep what they held, for undo
            now = {t: np.asarray(self.masks_layer.data[t]) for t in new}
            self._before_edit.update(frames_before_paint(item, now))
        self.edited_frames.update(frames)
        if frames:
            self._set_status(f"hand edit on frame(s) {sorted(frames)}: used as reference from the next step")

    def _safe_frame(self) -> int | None:
        try:
            return self.current_frame()
        except Exception:  # noqa: BLE001
            return None

    def _on_object_id(self, _value=None) -> None:
        oid = int(self.object_id.value)
        self.object_hint.value = self._object_hint(oid)
        if self.brush_layer is not None:
            self.brush_layer.colormap = self._brush_colormap(oid)
            self.brush_layer.selected_label = oid if oid > 0 else BRUSH_BACKGROUND
        layer = self.shapes_layer
        if layer is None:
            return
        selected = sorted(layer.selected_data)
        if selected:  # the selected shapes take the new id (and colour)
            feats = layer.features.copy()
            feats.loc[selected, "object_id"] = oid
            layer.features = feats
        layer.feature_defaults = {"object_id": oid}
        layer.current_edge_color = self.colour_of(oid)

    def colour_of(self, object_id: int):
        """Edge colour of scribbles of ``object_id`` (the masks layer's colour; 0 = white)."""
        if object_id == 0 or self.masks_layer is None:
            return BACKGROUND_COLOUR
        colour = self.masks_layer.colormap.map(object_id)
        colour = np.asarray(colour, dtype=float).reshape(-1)[:4].copy()
        colour[3] = 1.0
        return colour

    def _object_hint(self, object_id: int) -> str:
        if object_id == 0:
            return "background"
        objects = self.session.objects if self.session is not None else {}
        if object_id in objects:
            return str(objects[object_id].get("name") or f"object {object_id}")
        return "new object"

    def _step_object_id(self, step: int) -> None:
        self.object_id.value = max(0, int(self.object_id.value) + step)

    # ------------------------------------------------------------------ info and errors
    def _require_session(self) -> Session:
        if self.session is None:
            raise RuntimeError("start a session first (choose the video and press Start / resume)")
        return self.session

    @property
    def _busy(self) -> bool:
        return self._worker is not None and getattr(self, "_is_busy", False)

    def _set_busy(self, busy: bool, cancellable: bool = False) -> None:
        self._is_busy = busy
        for w in (self.start_button, self.to_mask_button, self.propagate_button, self.undo_button,
                  self.remove_ref_button, self.export_button):
            w.enabled = not busy
        self.cancel_button.enabled = busy and cancellable
        for layer in (self.masks_layer, self.brush_layer, self.shapes_layer):
            if layer is not None:
                _set_editable(layer, not busy)

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _update_info(self) -> None:
        s = self.session
        if s is None:
            self.references.value = "-"
            self.objects_info.value = "-"
            return
        refs = s.references
        parts = []
        for kind, label in (("user", "by you"), ("auto", "automatic")):
            frames = sorted(t for t, k in refs.items() if k == kind)
            if frames:
                parts.append(f"{label}: {_frame_list(frames)}")
        if self.edited_frames:
            parts.append(f"hand edits pending: {_frame_list(sorted(self.edited_frames))}")
        self.references.value = " · ".join(parts) or "none yet"
        # objects flow along wrapped lines (a colony of 40 nuclei takes a few lines, not 40):
        # the colour swatch and id, and the name where the user gave one
        entries = []
        proposed = s.proposals
        for oid, obj in sorted(s.objects.items()):
            if obj.get("proposal"):
                continue  # proposals (and dismissed ones) are summarised below
            hexcol = _hex(self.colour_of(oid))
            name = str(obj.get("name") or "")
            named = f": {html.escape(name)}" if name and name != f"object {oid}" else ""
            entries.append(f'<span style="white-space:nowrap"><span style="color:{hexcol}">&#9632;</span> '
                           f'{oid}{named}</span>')
        rows = [" &nbsp; ".join(entries)] if entries else []
        if proposed:
            items = [f"{oid} (frames {a}-{b})" for oid, (a, b) in sorted(proposed.items())]
            if len(items) > _MOST_PROPOSALS_LISTED:
                items = items[:_MOST_PROPOSALS_LISTED] + [f"... ({len(items)} in all)"]
            rows.append(f"<i>proposed: {html.escape(', '.join(items))}</i> &mdash; name one with a stroke "
                        "of an object id, dismiss it with a background stroke")
        self.objects_info.value = "<br>".join(rows) or "none yet"
        self.object_hint.value = self._object_hint(int(self.object_id.value))

    def _guarded(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - every failure is shown to the user
            self._report(exc)
            return None

    def _report(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        msg = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
        self._set_status(f"error: {msg}")
        show_error(msg)


_MOST_PROPOSALS_LISTED = 6


def _key_handler(widget: AnnotatorWidget, action: Callable[[], Any]):
    def handler(viewer):
        widget._guarded(action)

    return handler


def _frame_list(frames: list[int], most: int = 10) -> str:
    """``frame 3`` / ``frames 0, 10, 20`` / for long lists the first and last few and the count."""
    if len(frames) == 1:
        return f"frame {frames[0]}"
    shown = ", ".join(map(str, frames)) if len(frames) <= most else (
        f"{', '.join(map(str, frames[:most // 2]))}, ..., {', '.join(map(str, frames[-(most // 2):]))}"
        f" ({len(frames)} frames)")
    return f"frames {shown}"


def _hex(colour) -> str:
    if isinstance(colour, str):
        return colour
    rgb = np.clip(np.asarray(colour, dtype=float).ravel()[:3], 0, 1)
    return "#" + "".join(f"{int(round(v * 255)):02x}" for v in rgb)


def _set_editable(layer, editable: bool) -> None:
    """Lock or unlock a layer; its drawing mode comes back when unlocked."""
    if not editable and layer.editable:
        layer.metadata["_ivoma_mode"] = str(layer.mode)
    layer.editable = editable
    mode = layer.metadata.pop("_ivoma_mode", None) if editable else None
    if mode is not None:
        try:
            layer.mode = mode
        except (ValueError, KeyError):
            pass


def _forget_layer_history(layer) -> None:
    """Drop napari's own undo history of ``layer`` (its old values went stale)."""
    reset = getattr(layer, "_reset_history", None)
    if callable(reset):
        reset()


def _unwrap(obj):
    """The napari object behind the plugin proxy napari hands to widgets (identity checks)."""
    return getattr(obj, "__wrapped__", obj)


def _layer_channel(layer) -> int | None:
    """The channel of a multi-channel stack ``layer`` shows (None for a whole video)."""
    channel = (getattr(layer, "metadata", None) or {}).get(CHANNEL_KEY)
    return None if channel is None else int(channel)


def _layer_source(layer) -> str | None:
    """Path the frames of ``layer`` were read from, if known."""
    meta = getattr(layer, "metadata", None) or {}
    if meta.get(SOURCE_KEY):
        return str(meta[SOURCE_KEY])
    src = getattr(getattr(layer, "source", None), "path", None)
    return str(src) if src else None
