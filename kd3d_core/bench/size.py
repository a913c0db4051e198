"""Size family: scene model file MB and parameters per student and classical map MB, vs DUSt3R 512-DPT."""
from __future__ import annotations

import time
from pathlib import Path

from kd3d_core.bench.context import BenchContext
from kd3d_core.bench.dust3r import PUBLISHED_CHECKPOINT_GB, dpt512_size
from kd3d_core.bench.report import Table

SIZE_COLUMNS = [
    ("method", "method"), ("params", "parameters"), ("file_mb", "file MB"), ("source", "measured on"),
    ("dust3r_over_file", "DUSt3R 2.28 GB / file"), ("dust3r_params_over_params", "DUSt3R params / params"),
]


def random_model_file(student: str, input_wh: tuple[int, int], path: Path) -> Path:
    """A model file of a student's default architecture with random weights (same byte count as a trained one)."""
    import torch

    from kd3d_core.students import get_architecture, save_scene_model
    from kd3d_core.students.model_file import ModelMeta
    from kd3d_core.students.registry import config_to_dict

    arch = get_architecture(student)
    config = arch.default_config()
    torch.manual_seed(0)
    net = arch.build(config, input_wh)
    meta = ModelMeta(student, config_to_dict(config), tuple(input_wh), int(net.output_stride), (0.0, 0.0, 0.0), 1.0,
                     "map")
    save_scene_model(path, net, meta)
    return path


def _student_row(ctx: BenchContext, student: str, preset: str, dust3r_params: int) -> dict:
    from kd3d_core.bench.rooms import model_params

    distilled = ctx.models.get((preset, student))
    if distilled is not None:
        path, source = distilled.model_path, f"model distilled on '{preset}'"
    else:
        path = random_model_file(student, ctx.config.image_wh, ctx.config.workdir / "size" / f"{student}.kd3d")
        source = "default architecture, random weights"
    params = model_params(path)
    mb = path.stat().st_size / 1e6
    return {"method": student, "params": params, "file_mb": round(mb, 2), "source": source,
            "dust3r_over_file": round(PUBLISHED_CHECKPOINT_GB * 1000 / mb, 1),
            "dust3r_params_over_params": round(dust3r_params / params, 1)}


def run_size(ctx: BenchContext) -> list[Table]:
    """The size table."""
    t0 = time.perf_counter()
    cfg = ctx.config
    preset = cfg.rooms[0]
    dust3r = dpt512_size()
    rows = [_student_row(ctx, s, preset, dust3r.params) for s in ctx.students()]
    for baseline in cfg.baselines:
        sizes = [ctx.maps[(p, baseline)].path.stat().st_size / 1e6 for p in cfg.rooms if (p, baseline) in ctx.maps]
        if not sizes:
            sizes = [ctx.classical_map(preset, baseline).path.stat().st_size / 1e6]
        mb = sum(sizes) / len(sizes)
        rows.append({"method": f"classical-{baseline}", "params": None, "file_mb": round(mb, 2),
                     "source": f"mean map (.npz) over {len(sizes)} room(s)",
                     "dust3r_over_file": round(PUBLISHED_CHECKPOINT_GB * 1000 / mb, 1),
                     "dust3r_params_over_params": None})
    rows.append({"method": "DUSt3R 512-DPT", "params": dust3r.params, "file_mb": PUBLISHED_CHECKPOINT_GB * 1000,
                 "source": f"published checkpoint; params counted from the built model ({dust3r.backend}), "
                           f"x 4 bytes = {dust3r.float32_gb:.3f} GB",
                 "dust3r_over_file": 1.0, "dust3r_params_over_params": 1.0})
    notes = [
        "file MB: the self-contained .kd3d scene model file (safetensors weights + JSON metadata) a robot loads; "
        "classical: the compressed .npz feature map (3D points, descriptors, global descriptors, vocabulary), "
        "which grows with the number of mapping frames while a student's size does not.",
        f"DUSt3R 512-DPT: {dust3r.params:,} parameters counted from AsymmetricCroCo3DStereo built with the official "
        "512-DPT arguments on torch's meta device; float32 weights alone are "
        f"{dust3r.float32_gb:.2f} GB (the published checkpoint is {PUBLISHED_CHECKPOINT_GB} GB).",
    ]
    return [Table("size", "Model size vs DUSt3R 512-DPT", SIZE_COLUMNS, rows, notes,
                  seconds=time.perf_counter() - t0)]
