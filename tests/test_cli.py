"""The `ivoma` command line: the demo's whole loop on a generated clip, and `ivoma info`."""

from __future__ import annotations

import json

from PIL import Image

from napari_ivoma.cli import main, run_demo
from napari_ivoma.engine import is_mask_store


def test_demo_runs_the_loop_and_writes_store_and_overlay(tmp_path, capsys):
    results = run_demo(tmp_path / "out", ["nuclei"], samples_root=tmp_path / "clips", corrections=1)
    (res,) = results
    assert res["rounds"] == 2 and res["JF"] > 0.6 and res["SEG"] > 0.6
    assert is_mask_store(res["store"])
    with Image.open(res["overlay"]) as im:
        assert im.size[0] > im.size[1]  # a strip of frames
    printed = capsys.readouterr().out
    assert "round 1" in printed and "round 2" in printed and "masks:" in printed
    assert main(["info", res["store"]]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"][0] == 40 and "0" in info["references"]
    assert main(["info", str(tmp_path)]) == 2
