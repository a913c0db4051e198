"""Hostile-input run: ~150 bad inputs against the kd3d CLI and decoders, judged by the failure contract.

Every case must end with exit status != 0 and exactly ONE stderr line (or, where a correct answer exists, exit 0
with that answer), with no traceback, within a time limit, without leaving temporary files, and within a
memory bound (address space capped at +3 GiB while it runs; peak RSS growth <= 1.5 GiB). Categories:
options, scene folders, model files, pose files, messages, files (outputs: folders, devices, symlinks, read-only
and full disks, umask, leftovers of killed runs, concurrent writers, SIGTERM).

    python tools/hostile_inputs.py                      # all cases, table on stdout
    python tools/hostile_inputs.py --only model --verbose
    python tools/hostile_inputs.py --json results.json  # per-case verdicts

To measure an older kd3d, run it with that tree first on PYTHONPATH and KD3D_HOSTILE_PYTHONPATH set to it (for
the cases that start subprocesses). Cases needing root (tmpfs mounts, device nodes) are reported as skipped
elsewhere.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

# The repository root, AFTER anything on PYTHONPATH: an older kd3d tree put first there is the one measured.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from tools.hostile.harness import Verdict, call, cli, main_guard  # noqa: E402


def all_cases() -> list[tuple[str, str, object]]:
    """(category, name, run(work, bases) -> Verdict) for every case."""
    from tools.hostile.cases_files import FILE_CASES
    from tools.hostile.cases_model import MODEL_CASES, OPTION_CASES
    from tools.hostile.cases_poses import MESSAGE_CASES, POSE_CASES
    from tools.hostile.cases_scene import CASES as SCENE_CASES

    groups = [("options", OPTION_CASES), ("scene", SCENE_CASES), ("model", MODEL_CASES), ("poses", POSE_CASES),
              ("messages", MESSAGE_CASES), ("files", FILE_CASES)]
    return [(cat, name, fn) for cat, cases in groups for name, fn in cases]


def build_bases(root: Path) -> SimpleNamespace:
    """The valid inputs the cases break (scene with depth labels, models, a TUM file)."""
    from tools.hostile.fixtures import save_fast, save_vit, tum_lines, write_scene

    scene = write_scene(root / "scene")
    run = call(cli(["teach", scene, "--teacher", "depth", "--no-progress"]), timeout_s=120)
    if run.rc != 0:
        raise SystemExit(f"cannot label the base scene: {run.stderr}")
    tum = root / "traj.tum"
    tum.write_text("\n".join(tum_lines(10)) + "\n")
    return SimpleNamespace(scene=scene, vit=save_vit(root / "vit.kd3d"), fast=save_fast(root / "fast.kd3d"),
                           vit_big=_big_vit(root / "vit_big.kd3d"), tum=tum)


def _big_vit(path: Path) -> Path:
    """A ~3 MB ViT model: its exports do not fit on a 1 MiB disk."""
    import torch

    from kd3d_core.students import get_architecture
    from kd3d_core.students.model_file import ModelMeta, save_scene_model
    from kd3d_core.students.registry import config_to_dict
    from kd3d_core.students.vit import ViTConfig

    cfg = ViTConfig(patch=16, blocks=2, decoder_blocks=1, heads=2, latent=128, head_channels=64)
    torch.manual_seed(0)
    net = get_architecture("vit").build(cfg, (64, 48))
    save_scene_model(path, net, ModelMeta("vit", config_to_dict(cfg), (64, 48), 8, (0.0, 0.0, 2.0), 1.0, "map"))
    return path


def run_cases(cases, bases, scratch: Path, verbose: bool) -> list[dict]:
    results = []
    for i, (category, name, fn) in enumerate(cases):
        work = scratch / f"case{i:03d}"
        work.mkdir()
        t0 = time.perf_counter()
        try:
            verdict = fn(work, bases)
        except Exception as err:  # noqa: BLE001 - a broken case is reported, not fatal
            verdict = Verdict(False, [f"case error: {type(err).__name__}: {err}"])
        skipped = any(r.startswith("skipped:") for r in verdict.reasons)
        results.append({"category": category, "case": name, "held": bool(verdict.held), "skipped": skipped,
                        "reasons": verdict.reasons, "seconds": round(time.perf_counter() - t0, 2),
                        "stderr": verdict.run.stderr_lines[:3] if verdict.run else []})
        if verbose:
            mark = "SKIP" if skipped else ("held" if verdict.held else "FAIL")
            print(f"[{mark}] {category:8s} {name}: {'; '.join(verdict.reasons)[:300]}"
                  + (f"  | {results[-1]['stderr'][:1]}" if verdict.held and results[-1]["stderr"] else ""),
                  flush=True)
        shutil.rmtree(work, ignore_errors=True)
    return results


def table(results: list[dict]) -> str:
    """Markdown table: cases per category, held, failed, skipped."""
    by = defaultdict(lambda: [0, 0, 0, 0])
    for r in results:
        row = by[r["category"]]
        row[0] += 1
        row[1 if r["held"] else 3 if r["skipped"] else 2] += 1
    lines = ["| category | cases | held | failed | skipped |", "|---|---|---|---|---|"]
    total = [0, 0, 0, 0]
    for cat, row in by.items():
        lines.append(f"| {cat} | {row[0]} | {row[1]} | {row[2]} | {row[3]} |")
        total = [a + b for a, b in zip(total, row)]
    lines.append(f"| **all** | {total[0]} | {total[1]} | {total[2]} | {total[3]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="run one category (options, scene, model, poses, messages, files)")
    parser.add_argument("--match", default=None, help="run the cases whose name contains this text")
    parser.add_argument("--json", type=Path, default=None, help="write per-case verdicts here")
    parser.add_argument("--verbose", action="store_true", help="one line per case")
    args = parser.parse_args(argv)
    main_guard()
    import kd3d_core

    print(f"kd3d_core from {Path(kd3d_core.__file__).parent}", flush=True)
    cases = [c for c in all_cases() if (args.only is None or c[0] == args.only)
             and (args.match is None or args.match.lower() in c[1].lower())]
    scratch = Path(tempfile.mkdtemp(prefix="kd3d-hostile-"))
    try:
        bases = build_bases(scratch / "bases")
        results = run_cases(cases, bases, scratch, args.verbose)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["held"] or r["skipped"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
