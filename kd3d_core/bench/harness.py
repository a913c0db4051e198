"""`run_benchmarks`: run the configured benchmark families side by side and collect one report."""
from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from kd3d_core.bench.config import BenchConfig
from kd3d_core.bench.context import BenchContext
from kd3d_core.bench.machine import machine_info
from kd3d_core.bench.report import BenchReport, Table, config_dict


def _families() -> dict[str, Callable[[BenchContext], list[Table]]]:
    from kd3d_core.bench.accuracy import run_accuracy
    from kd3d_core.bench.covariance import run_covariance
    from kd3d_core.bench.robustness import run_robustness
    from kd3d_core.bench.scaling import run_scaling
    from kd3d_core.bench.size import run_size
    from kd3d_core.bench.speed import run_speed
    from kd3d_core.bench.teacher_quality import run_teacher_quality

    return {"accuracy": run_accuracy, "covariance": run_covariance, "robustness": run_robustness, "speed": run_speed, "size": run_size,
            "scaling": run_scaling, "teacher_quality": run_teacher_quality}


def run_benchmarks(config: BenchConfig, command: str = "kd3d bench") -> BenchReport:
    """Run every configured family in order (accuracy first, so later families reuse its models and maps).

    A family that raises does not stop the others: its section gets status "error: ..." (traceback on stderr),
    and `BenchReport.ok` becomes False so the command exits non-zero.
    """
    config.workdir.mkdir(parents=True, exist_ok=True)
    report = BenchReport(created=datetime.now(UTC).isoformat(timespec="seconds"), command=command,
                         quick=config.quick, machine=machine_info(config.device), config=config_dict(config))
    ctx = BenchContext(config)
    families = _families()
    t_run = time.perf_counter()
    for name in config.families:
        t0 = time.perf_counter()
        print(f"kd3d bench: {name} ...", file=sys.stderr, flush=True)
        try:
            tables = families[name](ctx)
        except Exception as err:  # noqa: BLE001 - one failing family must not lose the others' results
            traceback.print_exc(file=sys.stderr)
            tables = [Table(name, name, [], status=f"error: {type(err).__name__}: {err}".splitlines()[0])]
        for table in tables:
            table.seconds = table.seconds or time.perf_counter() - t0
        report.tables.extend(tables)
        print(f"kd3d bench: {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    report.seconds = time.perf_counter() - t_run
    return report
