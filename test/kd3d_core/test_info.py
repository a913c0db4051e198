"""kd3d info on bags (all storages) and scene folders, text and JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kd3d_core.bags import write_scene_bag
from kd3d_core.cli import main
from kd3d_core.scene import open_scene
from kd3d_core.synth import SynthConfig, render_scene


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "room"
    render_scene(SynthConfig(preset="tiny", seed=1, mapping_frames=6, query_frames=2, size_wh=(48, 32)), out,
                 progress=False)
    return out


@pytest.mark.parametrize("storage,name", [("sqlite3", "bag"), ("mcap", "bag"), ("ros1", "bag.bag")])
def test_info_bag_json_and_text(synth, tmp_path, capsys, storage, name):
    bag = tmp_path / name
    write_scene_bag(open_scene(synth), bag, storage=storage, split="mapping", rate_hz=5.0,
                    depth_topic="/camera/depth/image_raw", progress=False)
    assert main(["info", str(bag), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kind"] == "bag" and s["storage"] == storage and s["messages"] == 6 * 4 + 1
    assert s["duration_s"] == pytest.approx(1.0)
    topics = {t["topic"]: t for t in s["topics"]}
    assert topics["/camera/color/image_raw"] == {"topic": "/camera/color/image_raw", "type": "sensor_msgs/msg/Image",
                                                 "count": 6, "rate_hz": pytest.approx(5.0)}
    assert topics["/tf_static"]["rate_hz"] is None
    assert main(["info", str(bag)]) == 0
    text = capsys.readouterr().out
    assert f"storage:  {storage}" in text and "duration: 1.000 s" in text
    line = next(x for x in text.splitlines() if x.startswith("/camera/color/image_raw"))
    assert line.split()[1:] == ["sensor_msgs/msg/Image", "6", "5.00", "Hz"]


def test_info_scene(synth, capsys):
    assert main(["info", str(synth), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kind"] == "scene" and s["frames"] == 8 and s["splits"] == {"mapping": 6, "query": 2}
    assert s["resolution"] == [48, 32] and s["depth_frames"] == 8 and s["posed_frames"] == 8
    assert s["timestamps"]["count"] == 8 and s["K"]["cx"] == pytest.approx(23.5)
    assert main(["info", str(synth)]) == 0
    text = capsys.readouterr().out
    assert "frames:      8 (mapping 6, query 2)" in text and "resolution:  48x32" in text
    assert "poses:       8 of 8 frames (100%)" in text


def test_info_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    assert main(["info", str(tmp_path / "junk")]) == 1
    assert "is not a scene folder" in capsys.readouterr().err
