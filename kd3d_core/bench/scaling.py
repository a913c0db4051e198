"""Scaling family: relocalization time vs input resolution, and alignment time / memory vs frame count."""
from __future__ import annotations

import time

import numpy as np

from kd3d_core.bench.context import BenchContext
from kd3d_core.bench.report import Table
from kd3d_core.bench.stats import Spread, ratio, time_calls
from kd3d_core.errors import ConfigError
from kd3d_core.scene import Split

RESOLUTION_COLUMNS = [
    ("method", "method"), ("size", "input"), ("megapixels", "MP"), ("ms", "ms per frame"),
    ("relative", "x smallest"), ("localized", "localized"),
]
ALIGNMENT_COLUMNS = [
    ("frames", "frames"), ("pairs", "pairs"), ("label_size", "pointmap size"), ("align_s", "align s"),
    ("peak_mb", "peak MB"), ("s_per_frame", "s / frame"), ("max_t_cm", "max t err (cm)"),
    ("max_r_deg", "max R err (°)"), ("aligned", "aligned"), ("outlier_edges_rejected", "outlier pairs rejected"),
]


def student_network_ms(student: str, size_wh: tuple[int, int], repeats: int, device: str) -> Spread:
    """Forward time (resize-free: the image is at the network size) of a student with random weights."""
    import torch

    from kd3d_core.students import SceneModel, get_architecture
    from kd3d_core.students.model_file import ModelMeta
    from kd3d_core.students.registry import config_to_dict

    arch = get_architecture(student)
    config = arch.default_config()
    torch.manual_seed(0)
    net = arch.build(config, size_wh)
    meta = ModelMeta(student, config_to_dict(config), tuple(size_wh), int(net.output_stride), (0.0, 0.0, 0.0),
                     1.0, "map")
    model = SceneModel(net, meta, device)
    rgb = np.random.default_rng(0).integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    return time_calls(lambda: model.predict(rgb), repeats, warmup=1, sync=sync)


def _student_rows(ctx: BenchContext) -> list[dict]:
    rows = []
    for student in ctx.students():
        base = None
        for size in ctx.config.scaling_sizes:
            row = {"method": f"{student} network", "size": f"{size[0]}x{size[1]}",
                   "megapixels": round(size[0] * size[1] / 1e6, 3)}
            try:
                spread = student_network_ms(student, tuple(size), ctx.config.repeats, ctx.device())
            except ConfigError as err:  # e.g. a size that is not a multiple of the architecture's stride
                rows.append({**row, "ms": f"n/a: {err}"})
                continue
            base = base if base is not None else spread.median
            rows.append({**row, "ms": spread.to_dict(), "relative": round(ratio(spread.median, base) or 0, 2)})
    return rows


def _classical_rows(ctx: BenchContext) -> list[dict]:
    from kd3d_core.baselines import ClassicalMap
    from kd3d_core.bench.rooms import render_queries

    cfg, rows = ctx.config, []
    preset, n = cfg.rooms[0], min(3, cfg.speed_frames)
    scenes = {size: render_queries(cfg, preset, tuple(size), n).split(Split.QUERY) for size in cfg.scaling_sizes}
    for baseline in cfg.baselines:
        cmap = ClassicalMap.load(ctx.classical_map(preset, baseline).path)
        base = None
        for size, frames in scenes.items():
            images = [(f.load_rgb(), f.K) for f in frames]
            results: list = []

            def run(cmap: ClassicalMap = cmap, images: list = images, results: list = results) -> None:
                results.extend(cmap.localize(rgb, K) for rgb, K in images)

            spread = time_calls(run, cfg.repeats, warmup=1)
            per_frame = Spread(spread.median / n, spread.min / n, spread.max / n, spread.n)
            base = base if base is not None else per_frame.median
            rows.append({"method": f"classical-{baseline} (features + matching + PnP)", "size": f"{size[0]}x{size[1]}",
                         "megapixels": round(size[0] * size[1] / 1e6, 3), "ms": per_frame.to_dict(),
                         "relative": round(ratio(per_frame.median, base) or 0, 2),
                         "localized": round(float(np.mean([r.success for r in results])), 3)})
    return rows


def _alignment_rows(ctx: BenchContext) -> list[dict]:
    from kd3d_core.alignment import alignment_benchmark

    rows = []
    for n in ctx.config.alignment_frames:
        runs = [alignment_benchmark(n, seed=ctx.config.seed + k) for k in range(ctx.config.alignment_repeats)]
        row = dict(runs[0])
        for key in ("align_s", "peak_mb"):
            row[key] = Spread.of([r[key] for r in runs]).to_dict()
        row["s_per_frame"] = round(row["align_s"]["median"] / n, 3)
        row["max_t_cm"] = max(r["max_t_cm"] for r in runs)
        row["max_r_deg"] = max(r["max_r_deg"] for r in runs)
        rows.append(row)
    return rows


def run_scaling(ctx: BenchContext) -> list[Table]:
    """The resolution-scaling and alignment-scaling tables."""
    t0 = time.perf_counter()
    cfg = ctx.config
    rows = _student_rows(ctx) + _classical_rows(ctx)
    resolution = Table("scaling_resolution", "Relocalization time vs input resolution", RESOLUTION_COLUMNS, rows, [
        f"Students: network forward (random weights: the cost does not depend on them) built at each input size, "
        f"{cfg.repeats} timed runs after a warm-up, on {ctx.device()}. PnP cost does not grow with resolution "
        "(the relocalizer keeps at most 2048 correspondences).",
        f"Classical: whole localization (ORB/SIFT detection grows with pixels) of {min(3, cfg.speed_frames)} query "
        f"frames of room '{cfg.rooms[0]}' rendered at each size, against the map built at "
        f"{cfg.image_wh[0]}x{cfg.image_wh[1]}; per-frame time over {cfg.repeats} passes.",
    ], seconds=time.perf_counter() - t0)
    t1 = time.perf_counter()
    alignment = Table("scaling_alignment", "Global alignment time and memory vs frame count", ALIGNMENT_COLUMNS,
                      _alignment_rows(ctx), [
        "kd3d_core.alignment.alignment_benchmark: a synthetic loop of N frames with exact pairwise pointmaps, "
        "noise, unknown per-pair scales and outlier pairs, aligned by our global alignment (time excludes "
        "generating the synthetic pointmaps). peak MB = tracemalloc peak of Python/NumPy allocations.",
        f"{cfg.alignment_repeats} run(s) per frame count (seeds {cfg.seed}..{cfg.seed + cfg.alignment_repeats - 1}); "
        "errors are after a similarity fit to the true poses.",
    ], seconds=time.perf_counter() - t1)
    return [resolution, alignment]
