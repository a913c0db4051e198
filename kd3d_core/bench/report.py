"""Benchmark results: one table per benchmark section, rendered as JSON and Markdown.

JSON layout (stable keys, documented in bench/README.md):
    {"format": "kd3d-bench", "version": 1, "created": ISO time, "command": str, "quick": bool,
     "seconds": float, "machine": {...}, "config": {...},
     "sections": {NAME: {"title", "status", "seconds", "columns", "rows", "notes"}}}
`status` is "ok", or "error: <one line>" when the section failed (the run then exits non-zero).
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd3d_core.io_utils import atomic_write_text

FORMAT = "kd3d-bench"
VERSION = 1


@dataclass
class Table:
    """One section of the report.

    Attributes:
        name: JSON key (e.g. "accuracy").
        title: Markdown heading.
        columns: (key, header) pairs; rows are dicts keyed by `key`.
        rows: the measurements (JSON-ready values; nested dicts such as {median, min, max, n} allowed).
        notes: lines printed under the table (what was measured, how, caveats).
        status: "ok" or "error: ...".
        seconds: wall time the section took.
    """

    name: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: str = "ok"
    seconds: float = 0.0

    def fail(self, what: str, err: BaseException) -> None:
        """Record that one measurement of this table failed (the others still count; the run exits non-zero)."""
        message = f"{what}: {type(err).__name__}: {err}".splitlines()[0]
        self.status = f"error: {message}" if self.status == "ok" else f"{self.status}; {message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"title": self.title, "status": self.status, "seconds": round(self.seconds, 1),
                "columns": [k for k, _ in self.columns], "rows": _finite(self.rows), "notes": self.notes}


def _finite(value: Any) -> Any:
    """NaN / inf become None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class BenchReport:
    """A whole run."""

    created: str
    command: str
    quick: bool
    machine: dict[str, Any]
    config: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every section succeeded."""
        return all(t.status == "ok" for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {"format": FORMAT, "version": VERSION, "created": self.created, "command": self.command,
                "quick": self.quick, "seconds": round(self.seconds, 1), "machine": self.machine,
                "config": self.config, "sections": {t.name: t.to_dict() for t in self.tables}}


def config_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as JSON-ready values (paths and enums as strings, tuples as lists)."""
    def convert(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value
    return {f.name: convert(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "median" in value:
        med, lo, hi, n = value.get("median"), value.get("min"), value.get("max"), value.get("n", 1)
        if med is None:
            return "-"
        return _num(med) if n == 1 or lo is None else f"{_num(med)} ({_num(lo)}-{_num(hi)})"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value).replace("|", "\\|")


def _num(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    a = abs(v)
    if a >= 100 or v == int(v) and a < 1e6:
        return f"{v:,.0f}" if a >= 1e4 else f"{v:.0f}"
    return f"{v:.3g}" if a < 1 else f"{v:.1f}" if a < 100 else f"{v:.0f}"


def table_markdown(table: Table) -> str:
    """One section as Markdown: heading, status, table, notes."""
    lines = [f"## {table.title}", ""]
    if table.status != "ok":
        lines += [f"**{table.status}**", ""]
    if table.rows:
        lines.append("| " + " | ".join(h for _, h in table.columns) + " |")
        lines.append("|" + "|".join("---" for _ in table.columns) + "|")
        for row in table.rows:
            lines.append("| " + " | ".join(_cell(row.get(k)) for k, _ in table.columns) + " |")
        lines.append("")
    lines += [f"- {n}" for n in table.notes]
    if table.notes:
        lines.append("")
    return "\n".join(lines)


def report_markdown(report: BenchReport) -> str:
    """The whole report as a Markdown document."""
    m = report.machine
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    head = [
        f"# kd3d benchmark{' (quick smoke configuration)' if report.quick else ''}", "",
        f"- Created {report.created} by `{report.command}` in {report.seconds / 60:.1f} min.",
        f"- Machine: {m.get('cpu')}, {m.get('affinity_cpus') or m.get('cpu_count')} usable cores, "
        f"{m.get('memory_gb')} GB RAM{gpu}; device {m.get('device')}; load average at start "
        f"{m.get('load_average_1_5_15')}.",
        f"- Software: Python {m.get('python')}, torch {m.get('torch')} ({m.get('torch_threads')} threads), "
        f"OpenCV {m.get('opencv')}, NumPy {m.get('numpy')}; kd3d code "
        f"{m.get('kd3d_code') or 'not from a git checkout'}.",
        "- Times are medians over repeated runs with (min-max); compare ratios across machines, not absolute "
        "times.", "",
    ]
    return "\n".join(head + [table_markdown(t) for t in report.tables])


def write_outputs(report: BenchReport, json_path: Path | None, markdown_path: Path | None) -> None:
    """Write the JSON and/or Markdown files atomically."""
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=1, allow_nan=False) + "\n")
    if markdown_path is not None:
        atomic_write_text(markdown_path, report_markdown(report))
