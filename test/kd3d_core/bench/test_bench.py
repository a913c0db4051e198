"""kd3d bench: a tiny real run of every family produces the documented JSON keys and Markdown tables."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from kd3d_core.bench import BenchConfig, quick_config, report_markdown, run_benchmarks, write_outputs
from kd3d_core.bench.report import Table, table_markdown
from kd3d_core.bench.stats import Spread, ratio, time_calls
from kd3d_core.errors import ConfigError

SECTION_KEYS = {"title", "status", "seconds", "columns", "rows", "notes"}
ACCURACY_KEYS = {"room", "method", "frames", "localized", "recall_2cm_2deg", "recall_5cm_5deg", "recall_10cm_10deg",
                 "median_translation_cm", "median_rotation_deg", "ms_per_frame", "size_mb"}


def tiny_config(workdir: Path, **overrides: object) -> BenchConfig:
    base = quick_config(mapping_frames=16, query_frames=4, image_wh=(128, 96), students=("cnn",), train_epochs=1,
                        baselines=("orb",), speed_wh=(160, 120), speed_frames=2, repeats=1,
                        scaling_sizes=((64, 48), (128, 96)), alignment_frames=(20,), dust3r_wh=None,
                        workdir=workdir, progress=False)
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench_work")


@pytest.fixture(scope="module")
def report_files(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench_out")
    report = run_benchmarks(tiny_config(workdir), command="pytest")
    assert report.ok, [t.status for t in report.tables]
    write_outputs(report, out / "bench.json", out / "bench.md")
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def test_json_has_documented_sections_and_keys(report_files: tuple[dict, str]) -> None:
    doc, _ = report_files
    assert doc["format"] == "kd3d-bench" and doc["version"] == 1 and doc["quick"] is True
    assert {"created", "command", "seconds", "machine", "config"} <= set(doc)
    assert doc["machine"]["cpu_count"] >= 1 and doc["config"]["students"] == ["cnn"]
    names = ["accuracy", "distillation", "covariance", "robustness", "robustness_summary", "speed", "size", "scaling_resolution", "scaling_alignment"]
    assert list(doc["sections"]) == names
    for name in names:
        section = doc["sections"][name]
        assert set(section) == SECTION_KEYS and section["status"] == "ok" and section["rows"], name
        assert all(set(row) <= set(section["columns"]) for row in section["rows"]), name


def test_robustness_rows_cover_every_variant_and_method(report_files: tuple[dict, str]) -> None:
    sections = report_files[0]["sections"]
    rows = sections["robustness"]["rows"]
    variants = ["clean", "gain-0.5", "lights-dimmed", "roll-20"]
    assert [(r["variant"], r["method"]) for r in rows] == [(v, m) for m in ("fast", "classical-orb") for v in variants]
    for row in rows:
        assert row["room"] == "tiny" and row["frames"] == 4
        assert 0 <= row["recall_2cm_2deg"] <= row["recall_5cm_5deg"] <= row["recall_10cm_10deg"] <= 1
        # wrong fixes are localized frames outside 10 cm / 10 deg
        assert 0 <= row["wrong"] <= row["localized"] - round(row["recall_10cm_10deg"] * row["frames"])
        # covariance honesty per row: fractions of the localized frames (none localized: no figure)
        for key in ("t_in_chi2_95", "r_in_chi2_95"):
            assert (row[key] is None) if row["localized"] == 0 else 0 <= row[key] <= 1, (key, row)
    summary = {r["method"]: r for r in sections["robustness_summary"]["rows"]}
    assert set(summary) == {"fast", "classical-orb"} and summary["fast"]["rows"] == 4
    assert summary["fast"]["wrong"] == sum(r["wrong"] for r in rows if r["method"] == "fast")
    fast_rows = [r for r in rows if r["method"] == "fast"]
    assert summary["fast"]["worst_5cm"] == min(r["recall_5cm_5deg"] for r in fast_rows)
    if any(r["localized"] for r in fast_rows):
        assert 0 <= summary["fast"]["beyond_chi2_999"] <= sum(r["localized"] for r in fast_rows)


def test_wrong_fixes_count_localized_frames_beyond_10cm_or_10deg() -> None:
    from kd3d_core.bench.robustness import wrong_fixes

    inf = float("inf")
    summary = {"errors_m": [0.01, 0.2, 0.05, inf, 0.09], "errors_deg": [1.0, 1.0, 12.0, inf, 9.9]}
    assert wrong_fixes(summary) == 2


def test_robustness_summary_pools_nees_over_rows() -> None:
    import numpy as np

    from kd3d_core.bench.robustness import summary_rows
    from kd3d_core.localization.calibration import CovarianceCalibration

    rows = [{"room": "a", "variant": v, "method": "m", "recall_5cm_5deg": 1.0, "recall_2cm_2deg": 1.0,
             "median_translation_cm": 1.0, "wrong": 0} for v in ("clean", "noise")]
    # 7.81 is the chi^2(3) 95 % bound, 16.27 the 99.9 % one
    def evaluated(position: list[float], rotation: list[float]) -> dict:  # what evaluate_localizer returns
        return {"covariance": CovarianceCalibration(len(position), 1.0, np.array(position), np.array(rotation))}

    nees = {"m": [evaluated([1.0, 7.0, 8.0], [1.0, 1.0, 1.0]), evaluated([2.0], [20.0]), evaluated([], [])]}
    (row,) = summary_rows(rows, {"m": [1.0]}, nees)
    assert row["t_in_chi2_95"] == 0.75 and row["r_in_chi2_95"] == 0.75 and row["beyond_chi2_999"] == 1
    (row,) = summary_rows(rows, {"m": [1.0]})
    assert row["t_in_chi2_95"] is None and row["beyond_chi2_999"] is None


def test_target_misses_name_each_row_below_a_target() -> None:
    from kd3d_core.bench.robustness import target_misses

    def row(room, variant, r5, r2, med, method="fast"):
        return {"room": room, "variant": variant, "method": method, "recall_5cm_5deg": r5, "recall_2cm_2deg": r2,
                "median_translation_cm": med}

    rows = [row("office", "clean", 1.0, 0.95, 0.5), row("office", "jpeg-25", 0.967, 0.95, 1.2),
            row("lowtex", "clean", 0.0, 0.0, None), row("lowtex", "noise", 0.5, 0.2, 3.0),
            row("office", "jpeg-25", 0.0, 0.0, None, method="classical-orb")]
    line = target_misses(rows, "fast")
    assert line == "Rows of fast below its targets: office: jpeg-25 (5 cm 96.7 %, median 1.20 cm) | lowtex: every row."
    assert target_misses(rows[:1], "fast") == "fast meets its row targets in every room."
    assert "2 cm 85.0 %" in target_misses([row("living", "noise", 1.0, 0.85, 0.9)], "fast")


def test_robustness_variants_are_validated() -> None:
    from kd3d_core.bench.robustness import variant_names

    assert variant_names(("roll-20", "clean", "jpeg-25")) == ["clean", "jpeg-25", "roll-20"]
    with pytest.raises(ConfigError, match="unknown robustness variant"):
        variant_names(("clean", "fog"))


def test_accuracy_rows_cover_every_method_and_the_pooled_suite(report_files: tuple[dict, str]) -> None:
    rows = report_files[0]["sections"]["accuracy"]["rows"]
    assert {(r["room"], r["method"]) for r in rows} == {
        ("tiny", "classical-orb"), ("tiny", "cnn"), ("all rooms", "classical-orb"), ("all rooms", "cnn")}
    for row in rows:
        assert set(row) == ACCURACY_KEYS
        assert row["frames"] == 4 and 0 <= row["recall_5cm_5deg"] <= row["recall_10cm_10deg"] <= 1
        assert row["size_mb"] > 0 and row["ms_per_frame"] > 0
    distil = report_files[0]["sections"]["distillation"]["rows"]
    assert {r["method"] for r in distil} == {"classical-orb", "cnn"}
    assert all(r["mapping_frames"] == 16 and r["total_s"] >= 0 for r in distil)
    assert [r["budget"].split(" (")[0] for r in distil if r["method"] == "cnn"] == ["1 epochs"]


def test_covariance_rows_per_room_and_pooled(report_files: tuple[dict, str]) -> None:
    from kd3d_core.localization import RelocalizerConfig

    section = report_files[0]["sections"]["covariance"]
    rows = {(r["room"], r["method"]): r for r in section["rows"]}
    assert set(rows) == {("tiny", "cnn"), ("all rooms", "cnn")}
    for row in rows.values():
        assert row["inflation"] == RelocalizerConfig().covariance_inflation and 0 <= row["frames"] <= 4
        if row["frames"]:
            assert row["nees_position_mean"] > 0 and 0 <= row["coverage_position_chi2_95"] <= 1
            assert row["inflation_for_95"] > 0
    assert "NEES" in report_files[1] and "χ²(3) 95 %" in report_files[1]


def test_speed_size_and_scaling_measure_real_work(report_files: tuple[dict, str]) -> None:
    sections = report_files[0]["sections"]
    speed = {r["method"]: r for r in sections["speed"]["rows"]}
    assert set(speed) == {"cnn", "classical-orb", "cnn, one core busy"}
    for row in speed.values():
        assert row["total_ms"]["median"] >= row["network_ms"]["median"] > 0
        assert row["decode_ms"]["n"] == 2  # 2 frames x 1 repeat
    busy = speed["cnn, one core busy"]  # latency under contention: timed idle, then with a busy-looping process
    assert busy["idle_total_ms"]["n"] == 2 and busy["busy_over_idle"] == pytest.approx(
        busy["total_ms"]["median"] / busy["idle_total_ms"]["median"], abs=0.01)
    size = {r["method"]: r for r in sections["size"]["rows"]}
    assert size["DUSt3R 512-DPT"]["params"] == 571_171_208  # counted from the built 512-DPT architecture
    assert 1 < size["cnn"]["dust3r_params_over_params"] and size["cnn"]["file_mb"] > 1
    res = sections["scaling_resolution"]["rows"]
    assert [r["size"] for r in res if r["method"] == "cnn network"] == ["64x48", "128x96"]
    align = sections["scaling_alignment"]["rows"][0]
    assert align["frames"] == 20 and align["aligned"] == 20 and align["align_s"]["median"] > 0


def test_markdown_has_one_table_per_section(report_files: tuple[dict, str]) -> None:
    doc, md = report_files
    assert md.startswith("# kd3d benchmark (quick smoke configuration)")
    code = doc["machine"]["kd3d_code"]  # this checkout's commit (None when the tests run outside git)
    assert f"kd3d code {code or 'not from a git checkout'}." in md
    for heading in ("## Accuracy on the synthetic room suite", "## Distillation (mapping) time per room",
                    "## Relocalization speed at 160x120 input vs DUSt3R", "## Model size vs DUSt3R 512-DPT",
                    "## Relocalization time vs input resolution", "## Global alignment time and memory vs frame"):
        assert heading in md
    assert "| tiny | cnn |" in md and "DUSt3R 512-DPT forward timing was switched off" in md


def test_a_failing_method_is_reported_and_fails_the_run(workdir: Path) -> None:
    report = run_benchmarks(tiny_config(workdir, families=("accuracy",), students=("no_such_student",)))
    assert not report.ok
    accuracy = report.tables[0]
    assert accuracy.status.startswith("error: tiny/no_such_student: ConfigError: unknown student")
    assert [r["method"] for r in accuracy.rows] == ["classical-orb", "classical-orb"]  # the others still ran
    assert "**error: tiny/no_such_student" in report_markdown(report)


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown benchmark"):
        BenchConfig(families=("accuracy", "vibes"))
    with pytest.raises(ConfigError, match="unknown room preset"):
        BenchConfig(rooms=("castle",))
    with pytest.raises(ConfigError, match="alignment_frames must be >= 20"):
        BenchConfig(alignment_frames=(10,))
    with pytest.raises(ConfigError, match="sensor_noise must be 0-64"):
        BenchConfig(sensor_noise=-1.0)
    assert BenchConfig(families=("scaling", "accuracy")).families == ("accuracy", "scaling")


def test_cli_flags_become_a_config(tmp_path: Path) -> None:
    from kd3d_core.commands import bench

    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "--quick", "--only", "size", "speed", "--students", "cnn", "--repeats", "2",
                              "--no-dust3r-timing", "--workdir", str(tmp_path)])
    config = bench.bench_config(args)
    assert config.quick and config.families == ("speed", "size") and config.students == ("cnn",)
    assert config.repeats == 2 and config.dust3r_wh is None and config.workdir == tmp_path
    assert bench.bench_config(parser.parse_args(["bench"])).dust3r_wh == (512, 384)
    assert bench.bench_config(parser.parse_args(["bench"])).sensor_noise == 2.0
    assert bench.bench_config(parser.parse_args(["bench", "--sensor-noise", "0"])).sensor_noise == 0.0


def test_room_folders_tell_noise_floors_apart() -> None:
    from kd3d_core.bench.rooms import room_key

    noisy, clean = BenchConfig(), BenchConfig(sensor_noise=0.0)
    assert room_key(noisy, "office", (320, 240)) == "office-s0-mq-m200-q50-320x240-n2"
    assert room_key(clean, "office", (320, 240)) == "office-s0-mq-m200-q50-320x240"  # as before the noise floor
    assert room_key(replace(noisy, sensor_noise=1.5), "office", (320, 240), query_only=True).endswith("-n1.5")


def test_stats_and_table_helpers() -> None:
    s = Spread.of([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.n) == (2.0, 1.0, 3.0, 3) and s.text() == "2.0 (1.0-3.0)"
    assert Spread.of([]).to_dict()["median"] is None
    assert ratio(10.0, 2.0) == 5.0 and ratio(1.0, 0.0) is None
    calls = []
    assert time_calls(lambda: calls.append(1), repeats=3, warmup=2).n == 3 and len(calls) == 5
    table = Table("t", "T", [("a", "A"), ("b", "B")], [{"a": 12345, "b": {"median": 1.5, "min": 1.0, "max": 2.0,
                                                                         "n": 3}}])
    assert "| 12,345 | 1.5 (1-2) |" in table_markdown(table)
    table.fail("x", ValueError("boom\nmore"))
    assert table.status == "error: x: ValueError: boom"
    assert table.to_dict()["rows"][0]["a"] == 12345


def test_robustness_config_is_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown robustness variant"):
        BenchConfig(families=("robustness",), robust_variants=("clean", "fog"), workdir=tmp_path)
    with pytest.raises(ConfigError, match="unknown robustness student"):
        BenchConfig(families=("robustness",), robust_students=("fast", "cnnx"), workdir=tmp_path)
    assert BenchConfig(families=("robustness",), robust_students=("fast-no-lcn", "vit"), workdir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_code_version_names_the_commit_and_uncommitted_changes(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from kd3d_core.bench.machine import code_version

    assert code_version(tmp_path) is None  # not a git checkout
    if shutil.which("git") is None:
        pytest.skip("git is not installed")  # code_version then says None, checked above
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (repo / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = git("rev-parse", "--short", "HEAD").strip()
    assert code_version(repo) == commit
    (repo / "new.txt").write_text("untracked files do not count")
    assert code_version(repo) == commit
    (repo / "a.txt").write_text("2")
    assert code_version(repo) == f"{commit} + uncommitted changes"
    (repo / "sub").mkdir()
    assert code_version(repo / "sub") is None  # a folder inside a checkout is not its root
