"""The demo end to end on a tiny room (accuracy is measured by the real demo and `kd3d bench`, not here)."""
import dataclasses
import json
from pathlib import Path

import pytest

from kd3d_core.demo import MARKER, DemoConfig, format_summary, replay_shortfall, run_demo
from kd3d_core.errors import ConfigError


def test_demo_runs_every_stage_and_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    cfg = DemoConfig(out=out, preset="tiny", mapping_frames=16, query_frames=4, map_size_wh=(96, 72),
                     query_size_wh=(128, 96), device="cpu", threads=1, progress=False)
    summary = run_demo(cfg)
    for key in ("model", "report", "result_bag", "query_bag", "labels"):
        assert Path(summary.paths[key]).exists(), key
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert report["frames"] == 4
    for key in ("localized", "recall_2cm_2deg", "recall_5cm_5deg", "recall_10cm_10deg", "median_translation_m",
                "median_rotation_deg"):
        assert key in report
    assert (out / "evaluation" / "error_cdf.png").is_file()
    assert json.loads((out / MARKER).read_text())["teacher"] == "depth"
    text = format_summary(summary)
    assert "query frames localized" in text
    assert "1 torch thread, load average" in text  # the speed figure says how busy the machine was
    assert "sensor noise sigma 2 grey levels" in text  # the images carry a camera's noise floor, and say so
    # the one overwrite rule: an earlier demo is replaced only when asked
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        run_demo(cfg)
    run_demo(dataclasses.replace(cfg, overwrite=True))


@pytest.mark.parametrize("change", [dict(sensor_noise=-1.0), dict(sensor_noise=float("nan")), dict(mapping_frames=0)])
def test_a_bad_room_setting_fails_before_the_output_folder_is_made(tmp_path, change):
    out = tmp_path / "demo"
    with pytest.raises(ConfigError):
        run_demo(DemoConfig(out=out, progress=False, **change))
    assert not out.exists()


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a kd3d demo folder"):
        run_demo(DemoConfig(out=tmp_path))
    assert (tmp_path / "precious.txt").is_file()


def test_a_replay_that_localizes_far_fewer_frames_fails_the_demo():
    """The demo checks the bag path against the direct one: a replay that loses more than max(2, 5 %) of the
    frames the direct run localized is a broken bag path (a read-only camera matrix once made it 0 of 100 while
    the demo still printed 100 %)."""
    assert replay_shortfall(100, 100, 100) is None
    assert replay_shortfall(100, 95, 100) is None
    assert replay_shortfall(10, 8, 10) is None
    assert "0 of 100" in replay_shortfall(100, 0, 100)
    assert replay_shortfall(100, 94, 100) is not None
    assert replay_shortfall(90, 95, 100) is None
