"""The synthetic sample clips: format, determinism, and every property they claim."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_ivoma import synthetic as S

SPOTTED, STRIPED, PLAID = S.NATURAL_IDS["spotted"], S.NATURAL_IDS["striped"], S.NATURAL_IDS["plaid"]


@pytest.fixture(scope="module")
def natural():
    return S.make_natural_clip()


@pytest.fixture(scope="module")
def nuclei():
    return S.make_nuclei_clip()


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    return root, S.ensure_sample_clips(root)


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different non-zero ids that are 4-neighbours somewhere in a 2-D label image."""
    pairs = set()
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:, :], labels[:-1, :])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs |= {tuple(sorted(p)) for p in zip(a[m].tolist(), b[m].tolist())}
    return pairs


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


# --------------------------------------------------------------------------- format
def test_natural_shapes_and_dtypes(natural):
    frames, labels = natural
    assert frames.shape == (40, 240, 320, 3) and frames.dtype == np.uint8
    assert labels.shape == (40, 240, 320) and labels.dtype == np.uint32
    assert set(np.unique(labels)) == {0, SPOTTED, STRIPED, PLAID}


def test_nuclei_shapes_and_dtypes(nuclei):
    frames, labels = nuclei
    assert frames.shape == (40, 256, 256) and frames.dtype == np.uint16
    assert labels.shape == (40, 256, 256) and labels.dtype == np.uint32
    ids = set(np.unique(labels)) - {0}
    assert ids == set(range(1, max(ids) + 1))


@pytest.mark.parametrize("make", [S.make_natural_clip, S.make_nuclei_clip])
def test_custom_size(make):
    frames, labels = make(n_frames=10, shape=(80, 120), seed=3)
    assert frames.shape[:3] == labels.shape == (10, 80, 120)
    assert labels.max() > 0


@pytest.mark.parametrize("make", [S.make_natural_clip, S.make_nuclei_clip])
@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_frames": 3}, "n_frames"), ({"shape": (20, 300)}, "shape"),
     ({"shape": (100,)}, "shape")],
)
def test_bad_arguments(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_sample_clips_registry():
    assert S.SAMPLE_CLIPS == {"natural": S.make_natural_clip, "nuclei": S.make_nuclei_clip}


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("make", [S.make_natural_clip, S.make_nuclei_clip])
def test_deterministic_given_seed(make):
    f1, l1 = make(n_frames=12, shape=(96, 128), seed=5)
    f2, l2 = make(n_frames=12, shape=(96, 128), seed=5)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(l1, l2)
    f3, _ = make(n_frames=12, shape=(96, 128), seed=6)
    assert not np.array_equal(f1, f3)


def test_nuclei_seed_changes_layout():
    _, l1 = S.make_nuclei_clip(n_frames=10, seed=0)
    _, l2 = S.make_nuclei_clip(n_frames=10, seed=1)
    assert not np.array_equal(l1[0], l2[0])
    assert S.nuclei_lineage(n_frames=10, seed=1) == S.nuclei_lineage(n_frames=10, seed=1)


# --------------------------------------------------------------------------- natural clip
@pytest.mark.parametrize("n_frames, shape", [(40, (240, 320)), (12, (100, 300))])
def test_natural_object_leaves_and_reenters(n_frames, shape):
    _, labels = S.make_natural_clip(n_frames, shape)
    area = (labels == SPOTTED).sum(axis=(1, 2))
    absent = np.flatnonzero(area == 0)
    assert absent.size >= 2, "the spotted object never leaves the frame"
    assert area[: absent[0]].min() > 0 and area[absent[-1] + 1:].min() > 0
    assert np.all(np.diff(absent) == 1), "it should leave once, for a contiguous stretch"


def test_natural_object_crosses_the_border(natural):
    _, labels = natural
    area = (labels == SPOTTED).sum(axis=(1, 2))
    absent = np.flatnonzero(area == 0)
    # partly visible at the right border just before leaving and just after re-entering
    for t in (absent[0] - 1, absent[-1] + 1):
        assert (labels[t][:, -1] == SPOTTED).any()
        assert area[t] < 0.8 * area.max()


def test_natural_occlusion_front_object_wins(natural):
    _, labels = natural
    h, w = labels.shape[1:]
    shapes = S._natural_shapes(labels.shape[0], h, w)
    ratios = []
    for t, shape in enumerate(shapes[STRIPED]):
        fp = S._footprint(shape, h, w)
        full = np.zeros((h, w), bool)
        full[fp.rows, fp.cols] = fp.edge_dist >= 0
        visible = labels[t] == STRIPED
        assert not (visible & ~full).any()
        ratios.append(visible.sum() / full.sum())
        hidden = full & ~visible
        if hidden.any():  # whatever hides the striped object is an object in front of it
            assert set(np.unique(labels[t][hidden])) <= {SPOTTED, PLAID}
    ratios = np.array(ratios)
    assert ratios.max() > 0.99, "striped object should be unoccluded at some point"
    assert 0.05 < ratios.min() < 0.7, "striped object should be partly (not fully) hidden"
    # the plaid object overlaps the striped one while its visible area shrinks
    t = int(np.argmin(ratios))
    assert (labels[t] == PLAID).sum() > 0 and (STRIPED, PLAID) in _touching_pairs(labels[t])


def test_natural_shapes_deform_non_rigidly(natural):
    from skimage.measure import regionprops

    _, labels = natural
    aspect = []
    for t in range(labels.shape[0]):
        mask = labels[t] == SPOTTED
        if mask.sum() == 0 or mask[:, -1].any() or mask[:, 0].any():
            continue
        p = regionprops(mask.astype(np.uint8))[0]
        aspect.append(p.axis_major_length / p.axis_minor_length)
    assert len(aspect) > 10
    assert max(aspect) - min(aspect) > 0.2, "shape only translates, it should deform"


def test_natural_brightness_change(natural):
    frames, labels = natural
    grey = frames.astype(np.float32).mean(axis=-1)
    bg_mean = np.array([grey[t][labels[t] == 0].mean() for t in range(len(frames))])
    assert bg_mean.min() / bg_mean.max() < 0.7
    expected = S.natural_brightness(len(frames))
    assert np.corrcoef(bg_mean, expected)[0, 1] > 0.95


def test_natural_textures_differ(natural):
    frames, labels = natural
    frame, lab = frames[0].astype(np.float32), labels[0]
    means = {i: frame[lab == i].mean(axis=0) for i in (0, SPOTTED, STRIPED, PLAID)}
    for i in means:
        assert frame[lab == i].std(axis=0).max() > 10, f"region {i} is flat, not textured"
        for j in means:
            if i < j:
                assert np.abs(means[i] - means[j]).max() > 25, f"regions {i} and {j} look alike"


# --------------------------------------------------------------------------- nuclei clip
def test_nuclei_16bit_low_contrast_and_noisy(nuclei):
    frames, labels = nuclei
    bg, fg = frames[labels == 0], frames[labels > 0]
    assert frames.max() > 255, "needs the 16-bit range"
    assert 900 < np.median(bg) < 1100
    assert 100 < np.median(fg) - np.median(bg) < 600
    never = labels.max(axis=0) == 0  # pixels no nucleus ever covers
    temporal_std = frames[:, never].astype(float).std(axis=0)
    assert np.median(temporal_std) > 20, "background should carry shot + read noise"
    assert not np.array_equal(frames[0][labels[0] == 0], frames[1][labels[0] == 0])


def test_nuclei_lineage_matches_labels(nuclei):
    _, labels = nuclei
    lineage = S.nuclei_lineage()
    assert set(lineage) == set(np.unique(labels)) - {0}
    for lab, (begin, end, _) in lineage.items():
        present = np.flatnonzero((labels == lab).any(axis=(1, 2)))
        np.testing.assert_array_equal(present, np.arange(begin, end + 1))


def test_nuclei_division(nuclei):
    _, labels = nuclei
    lineage = S.nuclei_lineage()
    daughters = sorted(lab for lab, (_, _, parent) in lineage.items() if parent)
    assert len(daughters) == 2
    parent = lineage[daughters[0]][2]
    assert lineage[daughters[1]][2] == parent and lineage[parent][2] == 0
    t_div = lineage[daughters[0]][0]
    assert lineage[daughters[1]][0] == t_div and lineage[parent][1] == t_div - 1
    assert min(daughters) > max(lab for lab in lineage if lab not in daughters)  # new ids
    assert not (labels[t_div:] == parent).any()
    assert tuple(daughters) in _touching_pairs(labels[t_div]), "daughters should start adjacent"
    parent_mask = labels[t_div - 1] == parent
    radius = np.sqrt(parent_mask.sum() / np.pi)
    where = _centroid(parent_mask)
    for d in daughters:
        assert np.linalg.norm(_centroid(labels[t_div] == d) - where) < 1.5 * radius
    # daughters separate afterwards
    gap0 = np.linalg.norm(_centroid(labels[t_div] == daughters[0])
                          - _centroid(labels[t_div] == daughters[1]))
    gap1 = np.linalg.norm(_centroid(labels[-1] == daughters[0])
                          - _centroid(labels[-1] == daughters[1]))
    assert gap1 > gap0


def test_nuclei_touch_sometimes_and_move(nuclei):
    _, labels = nuclei
    pairs = set().union(*(_touching_pairs(lab) for lab in labels))
    daughters = {lab for lab, (_, _, parent) in S.nuclei_lineage().items() if parent}
    assert any(not set(p) <= daughters for p in pairs), "no neighbours ever touch"
    moved = [np.linalg.norm(_centroid(labels[-1] == lab) - _centroid(labels[0] == lab))
             for lab in np.unique(labels[-1]) if lab and (labels[0] == lab).any()]
    assert np.median(moved) > 3


def test_nuclei_are_textured(nuclei):
    frames, labels = nuclei
    for lab in (1, 2, 3):
        inside = frames[0][labels[0] == lab].astype(float)
        assert inside.std() > 40  # chromatin texture + shot noise, not a flat disc


# --------------------------------------------------------------------------- disk
@pytest.mark.parametrize("which", ["natural", "nuclei"])
def test_write_clip_round_trip(tmp_path, natural, nuclei, which):
    frames, labels = (natural if which == "natural" else nuclei)
    frames, labels = frames[:4], labels[:4]
    folder = S.write_clip(tmp_path / which, frames, labels)
    names = sorted(p.name for p in (folder / "frames").iterdir())
    assert names == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert sorted(p.name for p in (folder / "masks").iterdir()) == names
    back = np.stack([np.asarray(Image.open(folder / "frames" / n)) for n in names])
    masks = np.stack([np.asarray(Image.open(folder / "masks" / n)) for n in names])
    assert back.dtype == frames.dtype
    np.testing.assert_array_equal(back, frames)
    np.testing.assert_array_equal(masks, labels)
    f2, l2 = S.read_clip(folder)
    np.testing.assert_array_equal(f2, frames)
    np.testing.assert_array_equal(l2, labels)
    assert l2.dtype == np.uint32


def test_write_clip_large_ids_use_16bit_masks(tmp_path):
    frames = np.zeros((2, 8, 8), np.uint8)
    labels = np.zeros((2, 8, 8), np.uint32)
    labels[1, 2:4, 2:4] = 1000
    S.write_clip(tmp_path, frames, labels)
    mask = np.asarray(Image.open(tmp_path / "masks" / "00001.png"))
    assert mask.dtype == np.uint16 and mask[2, 2] == 1000


@pytest.mark.parametrize(
    "frames, labels, match",
    [
        (np.zeros((2, 8, 8), np.float32), np.zeros((2, 8, 8), np.uint32), "uint8 or uint16"),
        (np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 9), np.uint32), "does not match"),
        (np.zeros((2, 8, 8), np.uint8), np.full((2, 8, 8), 70000, np.uint32), "65535"),
        (np.zeros((2, 8, 8, 3), np.uint16), np.zeros((2, 8, 8), np.uint32), "colour"),
    ],
)
def test_write_clip_rejects_bad_input(tmp_path, frames, labels, match):
    with pytest.raises(ValueError, match=match):
        S.write_clip(tmp_path, frames, labels)


def test_ensure_sample_clips_writes_both(sample_root, natural, nuclei):
    root, folders = sample_root
    assert folders == {"natural": root / "natural", "nuclei": root / "nuclei"}
    for name, (frames, labels) in (("natural", natural), ("nuclei", nuclei)):
        f, lab = S.read_clip(folders[name])
        np.testing.assert_array_equal(f, frames)
        np.testing.assert_array_equal(lab, labels)
    track = (folders["nuclei"] / "man_track.txt").read_text().split("\n")
    rows = {int(r.split()[0]): tuple(map(int, r.split()[1:])) for r in track if r}
    assert rows == S.nuclei_lineage()


def test_ensure_sample_clips_reuses_current_copy(sample_root, monkeypatch):
    root, folders = sample_root
    before = {p: p.stat().st_mtime_ns for f in folders.values() for p in f.rglob("*")}

    def boom(*args, **kwargs):
        raise AssertionError("regenerated a current clip")

    monkeypatch.setitem(S.SAMPLE_CLIPS, "natural", boom)
    monkeypatch.setitem(S.SAMPLE_CLIPS, "nuclei", boom)
    assert S.ensure_sample_clips(root) == folders
    after = {p: p.stat().st_mtime_ns for f in folders.values() for p in f.rglob("*")}
    assert after == before


def test_ensure_sample_clips_regenerates_stale(tmp_path, monkeypatch):
    small = {"natural": lambda: S.make_natural_clip(8, (64, 64)),
             "nuclei": lambda: S.make_nuclei_clip(8, (64, 64))}
    monkeypatch.setattr(S, "SAMPLE_CLIPS", small)
    folders = S.ensure_sample_clips(tmp_path)
    stamp = folders["natural"] / "ivoma_sample.json"
    data = json.loads(stamp.read_text())
    data["version"] = -1
    stamp.write_text(json.dumps(data))
    (folders["natural"] / "masks" / "00003.png").unlink()
    S.ensure_sample_clips(tmp_path)
    assert json.loads(stamp.read_text())["version"] == S.GENERATOR_VERSION
    assert (folders["natural"] / "masks" / "00003.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_ensure_sample_clips_refuses_foreign_folder(tmp_path):
    (tmp_path / "natural").mkdir()
    (tmp_path / "natural" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a napari-ivoma sample clip"):
        S.ensure_sample_clips(tmp_path)
    assert (tmp_path / "natural" / "notes.txt").read_text() == "mine"


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IVOMA_SAMPLES", str(tmp_path / "here"))
    assert S.default_samples_root() == tmp_path / "here"
    monkeypatch.delenv("NAPARI_IVOMA_SAMPLES")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert S.default_samples_root() == tmp_path / "cache" / "napari-ivoma" / "sample_clips"


# --------------------------------------------------------------------------- napari sample data
def test_sample_data_layers():
    from napari_ivoma._sample_data import natural_clip, nuclei_clip

    for provide, name, rgb in ((natural_clip, "ivoma natural clip", True),
                               (nuclei_clip, "ivoma nuclei clip", False)):
        (image, image_meta, image_kind), (labels, gt_meta, gt_kind) = provide()
        assert image_kind == "image" and gt_kind == "labels"
        assert image_meta["name"] == name and image_meta.get("rgb", False) == rgb
        assert gt_meta == {"name": f"{name} ground truth", "visible": False, "opacity": 0.5}
        assert labels.dtype == np.uint32 and labels.shape == image.shape[:3]
