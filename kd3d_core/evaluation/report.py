"""Evaluation reports: JSON (the DESIGN.md keys plus per-frame errors), a Markdown summary, and plots."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kd3d_core.evaluation.metrics import RECALL_THRESHOLDS, EvaluationResult
from kd3d_core.evaluation.plots import plot_error_cdf, plot_trajectory
from kd3d_core.io_utils import atomic_write_text


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def report_dict(result: EvaluationResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dictionary (infinite errors of missing frames become null)."""
    report: dict[str, Any] = dict(result.summary())
    report["matched_by"] = result.matched_by.value
    if extra:
        report.update(extra)
    report["per_frame"] = [
        {"name": f.name, "translation_m": _json_number(f.translation_m), "rotation_deg": _json_number(f.rotation_deg),
         "localized": f.localized} for f in result.frames]
    return report


def markdown_summary(report: dict[str, Any], title: str = "Relocalization accuracy") -> str:
    """A short Markdown summary of a report dictionary."""
    def fmt(v: Any, scale: float = 1.0, unit: str = "") -> str:
        return "n/a" if v is None else f"{v * scale:.2f}{unit}"

    lines = [f"# {title}", "", f"Frames: {report['frames']}, localized: {report['localized']}", "",
             "| metric | value |", "|---|---|"]
    for t, r, key in RECALL_THRESHOLDS:
        lines.append(f"| recall {t * 100:g} cm / {r:g} deg | {fmt(report[key], 100, ' %')} |")
    lines.append(f"| median translation error | {fmt(report['median_translation_m'], 100, ' cm')} |")
    lines.append(f"| median rotation error | {fmt(report['median_rotation_deg'], 1, ' deg')} |")
    for key, value in report.items():
        if key.startswith("timing_") and isinstance(value, (int, float)):
            lines.append(f"| {key[7:].replace('_', ' ')} | {value:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(result: EvaluationResult, json_path: Path | str | None, markdown_path: Path | str | None = None,
                 plots_dir: Path | str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the JSON report (when `json_path` is given) and optionally Markdown and plots; returns the report.

    Plot paths are recorded in the JSON under "plots".
    """
    report = report_dict(result, extra)
    if plots_dir is not None:
        plots = Path(plots_dir)
        report["plots"] = {"error_cdf": str(plot_error_cdf(result, plots / "error_cdf.png")),
                           "trajectory": str(plot_trajectory(result, plots / "trajectory.png"))}
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report, indent=1, allow_nan=False) + "\n")
    if markdown_path is not None:
        atomic_write_text(markdown_path, markdown_summary(report))
    return report
