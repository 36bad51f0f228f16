"""The engine on real video from ../shared/data (skipped with a message when it is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from napari_ivoma.bench.annotator import first_round_scribbles
from napari_ivoma.bench.dataset import load_sequence, pan_out_and_back
from napari_ivoma.bench.metrics import frame_j, seg_score
from napari_ivoma.engine import Session

BEAR = SHARED_DATA / "davis" / "bear"
SIM = SHARED_DATA / "cells" / "Fluo-N2DH-SIMplus-01"


@pytest.mark.skipif(not BEAR.is_dir(), reason=f"real DAVIS data not found at {BEAR} (see ../shared/data)")
def test_scribble_and_propagate_on_davis_bear():
    seq = load_sequence(BEAR, max_frames=12)
    s = Session(seq.frames)
    labels0 = s.add_scribbles(0, first_round_scribbles(seq.masks[0], seq.object_ids))
    assert frame_j(seq.masks[0], labels0, seq.n_objects) >= 0.8
    out = np.asarray(s.propagate())
    js = [frame_j(seq.masks[t], out[t], seq.n_objects) for t in range(len(out))]
    assert min(js) >= 0.75 and np.mean(js) >= 0.8, js


@pytest.mark.skipif(not SIM.is_dir(), reason=f"real microscopy data not found at {SIM} (see ../shared/data)")
def test_propagate_nuclei_on_sim_plus():
    seq = load_sequence(SIM, max_frames=8)
    s = Session(seq.frames)
    s.set_labels(0, seq.masks[0])
    out = np.asarray(s.propagate())
    seg = [seg_score(seq.masks[t], out[t]) for t in range(1, len(out))]
    assert np.mean([v for v in seg if v is not None]) >= 0.8, seg


@pytest.mark.skipif(not BEAR.is_dir(), reason=f"real DAVIS data not found at {BEAR} (see ../shared/data)")
def test_bear_leaving_the_frame_and_coming_back_is_found_again():
    seq = load_sequence(BEAR)
    frames, masks = pan_out_and_back(seq.frames, seq.masks, 110)  # the window pans off the bear and back
    area = (masks[0] > 0).sum()
    s = Session(frames)
    s.set_labels(0, masks[0])
    pred = np.asarray(s.propagate())
    gone = [t for t in range(len(masks)) if not masks[t].any()]
    back = [t for t in range(gone[-1] + 1, len(masks)) if (masks[t] > 0).sum() >= 0.3 * area]
    assert len(gone) >= 20 and len(back) >= 5
    assert not pred[gone].any()  # nothing on the ground while the bear is out of view
    js = [frame_j(masks[t], pred[t], 1) for t in back]
    assert np.mean(js) >= 0.85, js
