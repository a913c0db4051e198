"""bench/gpu_students.py on CPU with a tiny budget: the real pipeline end to end (render, depth teacher, training of
cnn / mobilenetv3 / vit, relocalization under photometric variants, 640x480 timing), the JSON and Markdown it
writes, and its bad-input contract. The GPU figures themselves come from a run on a GPU machine (bench/README.md).
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_students.py"
STUDENTS = ["cnn", "mobilenetv3", "vit"]
VARIANTS = ["clean", "gain-0.5", "gamma-1.6"]


@pytest.fixture(scope="module")
def gpu_students():
    spec = importlib.util.spec_from_file_location("kd3d_bench_gpu_students", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(gpu_students, tmp_path_factory, one_torch_thread):
    """One quick CPU run (about 30 s on a loaded 2-core machine), shared by the checks below."""
    out = tmp_path_factory.mktemp("gpu_students")
    rc = gpu_students.main(["--quick", "--device", "cpu", "--threads", "1", "--quiet", "--workdir", str(out / "work"),
                            "--frames", "16", "2", "--json", str(out / "r.json"), "--markdown", str(out / "r.md")])
    return rc, json.loads((out / "r.json").read_text()), (out / "r.md").read_text(), out


def _fraction(x) -> bool:
    return isinstance(x, float | int) and 0.0 <= x <= 1.0


def test_quick_run_succeeds_and_describes_itself(quick_run):
    rc, doc, _, out = quick_run
    assert rc == 0
    assert doc["format"] == "kd3d-gpu-students" and doc["version"] == 1 and doc["quick"] is True
    assert doc["machine"]["device"] == "cpu" and doc["config"]["device"] == "cpu"
    assert doc["room"]["mapping_frames"] == 16 and doc["room"]["query_frames"] == 2
    assert doc["config"]["students"] == STUDENTS and doc["config"]["variants"] == VARIANTS[1:]
    assert 0 < doc["seconds"] < 600
    assert sorted(p.name for p in out.iterdir()) == ["r.json", "r.md", "work"], "no temporaries are left"


def test_every_student_has_its_metrics_in_range(quick_run):
    _, doc, _, out = quick_run
    assert [r["student"] for r in doc["students"]] == STUDENTS
    for r in doc["students"]:
        assert r["error"] is None
        assert 0.5 < r["params_m"] < 50 and 0.5 < r["size_mb"] < 200
        assert (out / "work" / "models" / f"{r['student']}.kd3d").stat().st_size == pytest.approx(
            r["size_mb"] * 1e6, rel=1e-3)
        assert r["train"]["epochs"] >= 1 and r["train"]["steps"] >= 1 and r["train"]["amp"] is False
        assert r["train"]["stop_reason"] == "time_budget" and r["train"]["batch_size"] == 8
        for key in ("heldout_mean_m", "heldout_median_m", "query_l2_mean_m", "query_l2_median_m"):
            assert math.isfinite(r[key]) and 0 < r[key] < 50, key
        assert list(r["localization"]) == VARIANTS
        for summary in r["localization"].values():
            assert summary["frames"] == 2 and 0 <= summary["localized"] <= 2
            assert all(_fraction(summary[k]) for k in ("recall_2cm_2deg", "recall_5cm_5deg", "recall_10cm_10deg"))
            assert summary["recall_2cm_2deg"] <= summary["recall_5cm_5deg"] <= summary["recall_10cm_10deg"]
        s = r["speed"]
        assert s["input"] == "640x480" and s["frames"] == 2 and s["localize_ms"]["n"] == 2
        assert 0 < s["hz_with_decode"] <= s["hz"] < 1000
        assert s["hz"] == pytest.approx(1000 / s["localize_ms"]["median"], rel=0.01)
        assert 0 < s["network_ms"]["median"] <= s["localize_ms"]["median"]
        assert _fraction(s["localized"]) and _fraction(s["recall_5cm_5deg"])


def test_markdown_has_one_row_per_student_and_variant(quick_run):
    _, doc, md, _ = quick_run
    assert md.startswith("# The paper's students on CPU (quick smoke configuration)")
    for name in STUDENTS:
        assert sum(line.startswith(f"| {name} | ") for line in md.splitlines()) == 1 + len(VARIANTS)
    hz = doc["students"][0]["speed"]["hz"]
    assert f"{hz:.1f}" in md


@pytest.mark.parametrize("args, message", [
    (["--size", "320by240"], r"--size must be WxH"),
    (["--students", "resnet"], r"resnet"),
    (["--variants", "sepia"], r"unknown variant\(s\) sepia"),
    (["--device", "cuda:7"], r"cuda"),
    (["--minutes-per-student", "0"], r"must be positive"),
])
def test_bad_input_is_one_line_and_exit_2(gpu_students, tmp_path, capsys, args, message):
    import re

    rc = gpu_students.main(["--quick", "--device", "cpu", "--workdir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(message, err), err
    assert not any(tmp_path.iterdir()), "nothing is rendered before the input is checked"
