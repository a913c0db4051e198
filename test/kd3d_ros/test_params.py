"""The node's parameter table, its validation, and config/relocalizer.yaml agreeing with it (no ROS needed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kd3d_core.errors import ConfigError
from kd3d_ros.params import PARAMETERS, PARAMETERS_BY_NAME, Device, NodeConfig, check_value, load_params_yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "relocalizer.yaml"
PY_TYPES = {"bool": bool, "int": int, "float": float, "string": str}
ISSUE_PARAMETERS = {"model_path", "device", "image_topic", "compressed", "camera_info_topic", "map_frame",
                    "odom_frame", "base_frame", "publish_tf", "publish_cloud", "cloud_stride", "cloud_max_points",
                    "min_inliers", "max_rate", "publish_initialpose"}


def _valid(**changes) -> dict:
    return {"model_path": "/models/room.kd3d", **changes}


def test_table_has_the_issue_parameters_with_descriptions():
    assert ISSUE_PARAMETERS <= set(PARAMETERS_BY_NAME)
    assert len(PARAMETERS_BY_NAME) == len(PARAMETERS)
    for spec in PARAMETERS:
        assert spec.description.strip(), spec.name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), spec.name
        check_value(spec, spec.default)  # every default passes its own limits


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_files_match_the_table(path):
    """Every key of every parameter file is declared, with the declared type (a float written `10` would be an
    integer to ROS, a type error for a double parameter)."""
    values = load_params_yaml(path)
    assert set(values) <= set(PARAMETERS_BY_NAME), set(values) - set(PARAMETERS_BY_NAME)
    for name, value in values.items():
        expected = PY_TYPES[PARAMETERS_BY_NAME[name].type_name]
        assert type(value) is expected, f"{path.name}: {name} is {type(value).__name__}, declared {expected.__name__}"


def test_default_yaml_lists_every_parameter_with_its_default():
    values = load_params_yaml(CONFIG)
    assert set(values) == set(PARAMETERS_BY_NAME)
    assert values == {spec.name: spec.default for spec in PARAMETERS}
    assert "/**" in yaml.safe_load(CONFIG.read_text())


def test_defaults_plus_model_build_a_config():
    config = NodeConfig.from_values(_valid())
    assert config.device is Device.AUTO and config.publish_tf and not config.compressed
    assert config.input_topic == "/camera/color/image_raw"
    assert config.info_topic == "/camera/color/camera_info"
    assert config.as_values()["device"] == "auto"
    assert NodeConfig.from_values(config.as_values()) == config


def test_topics_follow_image_transport_names():
    compressed = NodeConfig.from_values(_valid(compressed=True, image_topic="/cam/image_raw"))
    assert compressed.input_topic == "/cam/image_raw/compressed" and compressed.info_topic == "/cam/camera_info"
    already = NodeConfig.from_values(_valid(compressed=True, image_topic="/cam/image_raw/compressed"))
    assert already.input_topic == "/cam/image_raw/compressed" and already.info_topic == "/cam/camera_info"
    explicit = NodeConfig.from_values(_valid(camera_info_topic="/calib"))
    assert explicit.info_topic == "/calib"


def test_ints_are_accepted_for_floats():
    assert NodeConfig.from_values(_valid(max_rate=5)).max_rate == 5.0


@pytest.mark.parametrize("changes, match", [
    ({"model_path": ""}, "model_path is empty"),
    ({"model_path": "m", "device": "tpu"}, "device must be one of auto, cuda, cpu"),
    ({"model_path": "m", "encoder_backend": "tensorrt"}, "encoder_backend must be one of auto, torch, onnxruntime"),
    ({"model_path": "m", "cloud_stride": 0}, "cloud_stride must be >= 1"),
    ({"model_path": "m", "min_inliers": 3}, "min_inliers must be >= 4"),
    ({"model_path": "m", "max_rate": -1.0}, "max_rate must be >= 0"),
    ({"model_path": "m", "max_rate": float("nan")}, "max_rate must be a number"),
    ({"model_path": "m", "publish_tf": "yes"}, "publish_tf must be a bool"),
    ({"model_path": "m", "cloud_max_points": 1.5}, "cloud_max_points must be a int"),
    ({"model_path": "m", "cloud_stride": True}, "cloud_stride must be a int"),
    ({"model_path": 3}, "model_path must be a string"),
    ({"model_path": "m", "image_topic": " "}, "image_topic must not be empty"),
    ({"model_path": "m", "odom_frame": "map"}, "must differ"),
    ({"model_path": "m", "camera_info_topic": "/camera/color/image_raw"}, "both be read from"),
    ({"model_path": "m", "bogus": 1}, "unknown relocalizer parameter"),
])
def test_invalid_values_are_refused(changes, match):
    with pytest.raises(ConfigError, match=match):
        NodeConfig.from_values(changes)


def test_load_params_yaml_sections_and_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    max_rate: 2.0\n    min_inliers: 50\n"
                    "relocalizer:\n  ros__parameters:\n    max_rate: 4.0\n")
    assert load_params_yaml(path) == {"max_rate": 4.0, "min_inliers": 50}  # the node's own section wins
    path.write_text("other_node:\n  ros__parameters:\n    a: 1\n")
    with pytest.raises(ConfigError, match="no ros__parameters"):
        load_params_yaml(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_params_yaml(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_params_yaml(tmp_path / "missing.yaml")
