"""Flags of the simulated DUSt3R teacher (`--teacher simulated-dust3r`), shared by `kd3d teach` and `kd3d distill`.

A benchmark/test teacher: DUSt3R's pair outputs simulated from a synthetic scene's exact geometry with errors of
the published size (kd3d_core.teachers.simulated); everything after the network is the production path.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_simulated_arguments(p: argparse.ArgumentParser) -> None:
    """Add the --sim-* flags (a group of their own)."""
    g = p.add_argument_group("simulated DUSt3R (--teacher simulated-dust3r; benchmarks and tests, not for real data)")
    g.add_argument("--sim-error-scale", type=float, default=1.0,
                   help="errors relative to DUSt3R's published figures (0.5, 1, 2; 0 = exact geometry)")
    g.add_argument("--sim-truth", type=Path, default=None,
                   help="scene with the exact depth and poses of the frames, e.g. the synthetic scene an RGB-only "
                        "bag was made from (default: the taught scene itself)")
    g.add_argument("--sim-seed", type=int, default=0, help="seed of the simulated errors")
    g.add_argument("--sim-monocular", action="store_true",
                   help="ignore the scene's poses (pure monocular: arbitrary scale and frame)")


def add_depth_correction_argument(p: argparse.ArgumentParser) -> None:
    """--no-depth-correction (DUSt3R teachers: real and simulated)."""
    p.add_argument("--no-depth-correction", action="store_true",
                   help="DUSt3R teachers: do not correct the pointmaps' depth with points triangulated from the "
                        "frames' known poses (kd3d_core.alignment.depth_correction; on by default when the scene "
                        "has poses and a calibrated K)")


def align_config(args: argparse.Namespace, **changes):
    """AlignConfig of the DUSt3R teachers from the flags (and any other field changes)."""
    from kd3d_core.alignment.solve import AlignConfig

    if args.no_depth_correction:
        changes["depth_correction"] = None
    return AlignConfig(**changes)


def simulated_config(args: argparse.Namespace):
    """SimulatedDust3rConfig from the flags."""
    from kd3d_core.errors import ConfigError
    from kd3d_core.teachers.config import SimulatedDust3rConfig

    if not args.sim_error_scale >= 0:
        raise ConfigError(f"--sim-error-scale must be >= 0, not {args.sim_error_scale}")
    return SimulatedDust3rConfig(error_scale=args.sim_error_scale, seed=args.sim_seed, truth=args.sim_truth,
                                 use_reference=not args.sim_monocular)
