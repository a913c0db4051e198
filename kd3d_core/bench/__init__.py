"""`kd3d bench`: accuracy, speed, size and scaling of the students side by side with a classical relocalizer
and the DUSt3R 512-DPT teacher architecture, in one run, as a Markdown table and JSON.

One module per benchmark family (accuracy, speed, size, scaling); `run_benchmarks(BenchConfig(...))` runs them
and returns a `BenchReport`; `write_outputs` writes its JSON / Markdown. See bench/README.md for the keys.
"""
from kd3d_core.bench.config import FAMILIES, BenchConfig, quick_config
from kd3d_core.bench.harness import run_benchmarks
from kd3d_core.bench.report import BenchReport, Table, report_markdown, write_outputs

__all__ = ["FAMILIES", "BenchConfig", "BenchReport", "Table", "quick_config", "report_markdown", "run_benchmarks",
           "write_outputs"]
