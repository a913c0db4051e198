"""`kd3d bench [--quick] [--json PATH] [--markdown PATH] [--only NAME ...]`: benchmarks side by side."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from kd3d_core.bench.config import FAMILIES
from kd3d_core.commands import add_overwrite_argument, add_quiet_argument, add_threads_argument, refuse_existing


def register(sub: argparse._SubParsersAction) -> None:
    """Add the bench subcommand."""
    p = sub.add_parser("bench", help="accuracy, speed, size and scaling vs a classical relocalizer and DUSt3R",
                       description="Benchmark the students side by side with a classical (ORB/SIFT + PnP) "
                                   "relocalizer and the DUSt3R 512-DPT architecture, on synthetic rooms, in one "
                                   "run. Prints a Markdown table; --json/--markdown also write files.")
    p.add_argument("--quick", action="store_true", help="CI smoke configuration: one tiny room, tiny budgets "
                   "(a few minutes); DUSt3R is timed at 64x48 only, and labelled so")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the Markdown report here")
    p.add_argument("--only", nargs="+", choices=FAMILIES, default=None, metavar="NAME",
                   help=f"run only these families ({', '.join(FAMILIES)})")
    p.add_argument("--rooms", nargs="+", default=None, help="synth presets of the accuracy suite (default all)")
    p.add_argument("--students", nargs="+", default=None, help="student architectures (default all registered)")
    p.add_argument("--robust-rooms", nargs="+", default=None,
                   help="synth presets of the robustness family (default office living lowtex)")
    p.add_argument("--robust-variants", nargs="+", default=None,
                   help="query variants of the robustness family (default: all; see bench/README.md)")
    p.add_argument("--robust-students", nargs="+", default=None,
                   help="students and fast ablations of the robustness family (default fast fast-no-lcn)")
    p.add_argument("--mapping-frames", type=int, default=None, help="mapping frames per room")
    p.add_argument("--query-frames", type=int, default=None, help="query frames per room")
    p.add_argument("--sensor-noise", type=float, default=None, metavar="SIGMA",
                   help="Gaussian noise in grey levels on every rendered image, mapping and query (default 2, a "
                        "quiet camera's noise floor; 0: the renderer's noise-free pixels)")
    p.add_argument("--train-minutes", type=float, default=None, help="end-to-end training budget per student/room")
    p.add_argument("--fast-iterations", type=int, default=None, help="fast student head steps per room")
    p.add_argument("--fast-buffer", type=int, default=None, help="fast student feature-buffer rows per room")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per measurement")
    p.add_argument("--alignment-frames", type=int, nargs="+", default=None,
                   help="frame counts of the alignment-scaling benchmark (each >= 20)")
    p.add_argument("--dust3r-repeats", type=int, default=None, help="timed DUSt3R 512-DPT pair forwards")
    p.add_argument("--no-dust3r-timing", action="store_true", help="skip the DUSt3R 512-DPT forward timing")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    add_threads_argument(p)
    p.add_argument("--workdir", type=Path, default=Path("bench_work"),
                   help="rooms, labels, models and maps (default ./bench_work; rooms are reused across runs)")
    add_quiet_argument(p)
    add_overwrite_argument(p)
    p.set_defaults(handler=run)


def bench_config(args: argparse.Namespace):
    """The frozen BenchConfig from the flags (the only place flags become a bench config)."""
    from kd3d_core.bench.config import BenchConfig, quick_config

    base = quick_config() if args.quick else BenchConfig()
    overrides = {"device": args.device, "workdir": args.workdir, "progress": not args.quiet}
    flag_fields = {"only": "families", "rooms": "rooms", "students": "students", "robust_rooms": "robust_rooms",
                   "robust_variants": "robust_variants", "robust_students": "robust_students", "mapping_frames": "mapping_frames",
                   "query_frames": "query_frames", "sensor_noise": "sensor_noise", "train_minutes": "train_minutes",
                   "fast_iterations": "fast_iterations", "fast_buffer": "fast_buffer", "repeats": "repeats",
                   "alignment_frames": "alignment_frames", "dust3r_repeats": "dust3r_repeats"}
    for flag, name in flag_fields.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[name] = tuple(value) if isinstance(value, list) else value
    if args.no_dust3r_timing:
        overrides["dust3r_wh"] = None
    return dataclasses.replace(base, **overrides)


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks, print the Markdown report, write the files; exit 1 when a section failed."""
    from kd3d_core.bench import report_markdown, run_benchmarks, write_outputs

    from kd3d_core.threads import apply_threads

    refuse_existing([args.json, args.markdown], args.overwrite)
    config = bench_config(args)
    apply_threads(args.threads)
    command = "kd3d bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == "bench" else "kd3d bench"
    report = run_benchmarks(config, command=command.strip())
    write_outputs(report, args.json, args.markdown)
    print(report_markdown(report))
    return 0 if report.ok else 1
