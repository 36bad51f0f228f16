"""The benchmark protocol, data loading and report on tiny generated clips (nothing timed)."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_ivoma.bench import cli
from napari_ivoma.bench.dataset import SkipSequence, find_sequences, load_sequence
from napari_ivoma.bench.protocol import run_sequence
from napari_ivoma.engine.scribbles import rasterize_scribbles

T, H, W = 6, 40, 56


def _clip_labels(entering: bool = False) -> np.ndarray:
    """Object 1 moves right, object 2 is still; object 3 enters at frame 3 when asked."""
    gt = np.zeros((T, H, W), np.uint32)
    for t in range(T):
        gt[t, 6:18, 4 + 2 * t : 18 + 2 * t] = 1
        gt[t, 24:36, 32:48] = 2
        if entering and t >= 3:
            gt[t, 26:34, 4:14] = 3
    return gt


def _clip_frames(gt: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = rng.normal(70, 6, gt.shape + (3,)).clip(0, 255).astype(np.uint8)
    for oid, colour in ((1, (210, 50, 40)), (2, (40, 190, 60)), (3, (50, 60, 220))):
        frames[gt == oid] = colour
    return frames


def _write_binary_png_seq(folder, gt):
    """DAVIS layout: JPEG-like RGB frames as PNG, one binary {0, 255} mask per frame (object 1)."""
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    frames = _clip_frames(gt)
    for t in range(len(gt)):
        Image.fromarray(frames[t]).save(folder / "frames" / f"{t:05d}.png")
        Image.fromarray(((gt[t] == 1) * 255).astype(np.uint8)).save(folder / "masks" / f"{t:05d}.png")
    return folder


def _write_label_tiff_seq(folder, gt, skip_masks=()):
    """CTC layout: 16-bit grey TIFF frames tNNN.tif, label TIFF masks man_segNNN.tif with sparse ids."""
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    grey = _clip_frames(gt).mean(axis=-1).astype(np.uint16) * 40
    for t in range(len(gt)):
        tifffile.imwrite(folder / "frames" / f"t{t:03d}.tif", grey[t])
        if t not in skip_masks:
            ids = np.array([0, 17, 40, 99], np.uint16)[gt[t]]  # ids 17, 40, 99 -> 1, 2, 3
            tifffile.imwrite(folder / "masks" / f"man_seg{t:03d}.tif", ids)
    return folder


class EchoSession:
    """Fake engine: a frame's labels are its scribbled pixels; propagation copies the nearest reference."""

    def __init__(self, frames, store=None):
        self.shape = frames.shape[:3]
        self.strokes: dict[int, list] = {}
        self.refs: dict[int, np.ndarray] = {}
        self.calls: list[str] = []

    def add_scribbles(self, t, scribbles):
        self.calls.append(f"add{t}")
        self.strokes.setdefault(t, []).extend(scribbles)
        raster = rasterize_scribbles(self.strokes[t], self.shape[1:], radius=0)
        self.refs[t] = np.maximum(raster, 0).astype(np.uint32)
        return self.refs[t]

    def propagate(self):
        self.calls.append("propagate")
        refs = sorted(self.refs)
        out = np.zeros(self.shape, np.uint32)
        for t in range(self.shape[0]):
            out[t] = self.refs[min(refs, key=lambda r: abs(r - t))]
        return out


class OracleSession:
    """Fake engine that segments every object it was told about perfectly, on every frame."""

    def __init__(self, gt):
        self.gt = gt
        self.named: set[int] = set()

    def _known(self, labels):
        return np.where(np.isin(labels, list(self.named)), labels, 0).astype(np.uint32)

    def add_scribbles(self, t, scribbles):
        self.named |= {s.object_id for s in scribbles if s.object_id > 0}
        return self._known(self.gt[t])

    def propagate(self):
        return self._known(self.gt)


def test_load_binary_png_sequence_and_find_sequences(tmp_path):
    gt = _clip_labels()
    _write_binary_png_seq(tmp_path / "data" / "davis" / "walk", gt)
    _write_label_tiff_seq(tmp_path / "data" / "cells" / "sim", gt)
    found = find_sequences(tmp_path / "data")
    assert [p.name for p in found] == ["sim", "walk"]
    seq = load_sequence(tmp_path / "data" / "davis" / "walk")
    assert seq.frames.shape == (T, H, W, 3) and seq.frames.dtype == np.uint8
    assert seq.n_objects == 1 and not seq.instance
    np.testing.assert_array_equal(seq.masks, (gt == 1).astype(np.uint32))
    assert load_sequence(found[0], max_frames=4).frames.shape == (4, H, W)
    with pytest.raises(FileNotFoundError, match="no sequence folder"):
        find_sequences(tmp_path / "data" / "davis" / "walk" / "frames")


def test_label_tiffs_are_relabelled_consistently_and_sparse_gt_is_skipped(tmp_path):
    gt = _clip_labels(entering=True)
    seq = load_sequence(_write_label_tiff_seq(tmp_path / "sim", gt))
    assert seq.instance and seq.n_objects == 3 and seq.frames.dtype == np.uint16
    np.testing.assert_array_equal(seq.masks, gt)
    with pytest.raises(SkipSequence, match="masks missing for 2 of 6 frames"):
        load_sequence(_write_label_tiff_seq(tmp_path / "sparse", gt, skip_masks=(1, 4)))


def test_protocol_with_echo_session_calls_engine_like_a_user(tmp_path):
    seq = load_sequence(_write_label_tiff_seq(tmp_path / "sim", _clip_labels(entering=True)))
    sessions = []

    def factory(frames):
        sessions.append(EchoSession(frames))
        return sessions[-1]

    res = run_sequence(seq, rounds=3, session_factory=factory)
    calls = sessions[0].calls
    assert len(calls) == 6 and calls[1::2] == ["propagate"] * 3
    recs = res["rounds"]
    assert [r["round"] for r in recs] == [1, 2, 3]
    # round 1: an empty prediction, the first frame with the most objects (3 from frame 3 on)
    assert recs[0]["frame"] == 3 and recs[0]["scribble_ids"] == [1, 2, 3]
    assert recs[0]["scribbled_frame_J_before"] == 0.0
    assert recs[1]["n_scribbles"] >= 1 and recs[1]["frame_J_worst"] < 1
    # scribbles are thin: the echoed frame is poor but not empty, and corrections add pixels
    assert 0 < recs[0]["scribbled_frame_J_after_scribbles"] < 0.5
    assert all(0 <= r["JF"] <= 1 for r in recs)
    assert recs[-1]["JF"] > recs[0]["JF"]
    assert res["summary"]["SEG_rR"] is not None and 0 <= res["summary"]["SEG_rR"] <= 1
    assert res["summary"]["AUC"] == pytest.approx(np.mean([r["JF"] for r in recs]))


def test_protocol_stops_early_and_counts_unnamed_objects(tmp_path):
    seq = load_sequence(_write_label_tiff_seq(tmp_path / "sim", _clip_labels(entering=True)))
    gt = seq.masks
    # object 3 appears on frames 3..5 (3 appearances of 6 + 6 + 3 = 15); round 1 scribbles
    # frame 3, so all three objects are named at once and round 2 has nothing to fix
    res = run_sequence(seq, rounds=4, session_factory=lambda frames: OracleSession(gt))
    assert res["early_stop_round"] == 2
    assert [r["skipped"] for r in res["rounds"]] == [False, True, True, True]
    assert all(r["JF"] == 1.0 for r in res["rounds"])
    assert res["summary"]["unnamed_share_rR"] == 0.0
    assert res["summary"]["SEG_rR"] == 1.0

    # restrict to the first 3 frames: object 3 never appears, then start on frame 0 where 1, 2 are
    seq3 = load_sequence(tmp_path / "sim", max_frames=3)
    res3 = run_sequence(seq3, rounds=2, session_factory=lambda frames: OracleSession(seq3.masks))
    assert res3["objects"] == 2 and res3["early_stop_round"] == 2


def test_unnamed_share_when_an_object_enters_later(tmp_path):
    gt = _clip_labels(entering=True)
    gt[:3, 24:36, 32:48] = 0  # object 2 also enters at frame 3
    gt[3:, 6:18, :] = 0  # object 1 leaves at frame 3
    seq = load_sequence(_write_label_tiff_seq(tmp_path / "sim", gt))
    res = run_sequence(seq, rounds=3, session_factory=lambda frames: OracleSession(seq.masks))
    recs = res["rounds"]
    # round 1 picks frame 3 (objects 2 and 3 present); object 1 (frames 0..2) is unnamed
    assert recs[0]["frame"] == 3 and recs[0]["scribble_ids"] == [2, 3]
    assert recs[0]["unnamed_share"] == pytest.approx(3 / 9)
    assert recs[1]["frame"] == 0 and recs[1]["scribble_ids"] == [1]
    assert recs[1]["unnamed_share"] == 0.0 and recs[1]["JF"] == 1.0
    assert res["early_stop_round"] == 3


def test_cli_writes_json_markdown_and_plot(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _write_binary_png_seq(data / "walk", _clip_labels())
    _write_label_tiff_seq(data / "sim", _clip_labels(entering=True))
    _write_label_tiff_seq(data / "sparse", _clip_labels(), skip_masks=(2,))
    monkeypatch.setattr(
        cli, "default_session_factory", lambda params, backend: lambda frames: EchoSession(frames)
    )
    out = tmp_path / "out"
    code = cli.main([str(data), "--rounds", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    payload = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in payload["sequences"]] == ["sim", "walk"]
    assert "sparse" in payload["skipped"]
    walk = payload["sequences"][1]
    assert len(walk["rounds"]) == 2 and walk["summary"]["SEG_rR"] is None
    assert "scribbled_frame_J_after_scribbles" in walk["rounds"][1]
    md = (out / "results.md").read_text()
    assert md.splitlines()[0].startswith("| sequence | frames | objects | J&F r1 | J&F r2 | AUC")
    assert "| **mean** |" in md and "- sparse: masks missing for 1 of 6 frames" in md
    assert (out / "jf_rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        cli.main([str(data), "--seq", "nope", "--out", str(out)])
    assert "unknown sequence" in capsys.readouterr().err


def test_parse_params():
    assert cli.parse_params(["a=1", "b=2.5", "c=true", "d=fast", "e=[1, 2]"]) == {
        "a": 1, "b": 2.5, "c": True, "d": "fast", "e": [1, 2],
    }
    with pytest.raises(ValueError, match="key=value"):
        cli.parse_params(["novalue"])


def test_protocol_with_the_real_session(tmp_path):
    seq = load_sequence(_write_binary_png_seq(tmp_path / "walk", _clip_labels()))
    res = run_sequence(seq, rounds=2)
    recs = res["rounds"]
    assert recs[0]["frame"] == 0 and recs[0]["scribble_ids"] == [1]
    assert recs[0]["scribbled_frame_J_after_scribbles"] > 0.5
    assert all(0 <= r["JF"] <= 1 for r in recs)
    assert res["summary"]["JF_r1"] > 0.3
    assert res["summary"]["cpsm_latency_per_frame"] > 0


def test_protocol_every_region_annotator_draws_at_least_as_many_strokes(tmp_path):
    seq = load_sequence(_write_label_tiff_seq(tmp_path / "sim", _clip_labels(entering=True)))
    runs = {}
    for mode in ("largest", "every-region"):
        res = run_sequence(seq, rounds=3, session_factory=EchoSession, annotator_mode=mode)
        assert res["annotator"] == mode
        runs[mode] = [r["n_scribbles"] for r in res["rounds"]]
    assert runs["every-region"][0] == runs["largest"][0]  # round 1 is the same
    assert runs["every-region"][1] >= runs["largest"][1]
    with pytest.raises(ValueError, match="annotator_mode"):
        run_sequence(seq, rounds=1, session_factory=EchoSession, annotator_mode="all")
