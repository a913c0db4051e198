"""`kd3d export MODEL --onnx PATH | --torchscript PATH`: deployment formats of a scene model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import add_overwrite_argument, add_threads_argument, refuse_existing
from kd3d_core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the export subcommand."""
    p = sub.add_parser("export", help="export a .kd3d model to ONNX or TorchScript",
                       description="Export a scene model for deployment. Input: float32 (B,3,H,W) RGB 0..255 at the "
                                   "model's input size; outputs: world points (B,3,h,w) in metres and confidence "
                                   "(B,h,w).")
    p.add_argument("model", type=Path, help="scene model file (.kd3d)")
    p.add_argument("--onnx", type=Path, default=None, help="write an ONNX file")
    p.add_argument("--torchscript", type=Path, default=None, help="write a TorchScript file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    add_threads_argument(p)
    add_overwrite_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Export to the requested formats."""
    from kd3d_core.students.export import export_onnx, export_torchscript
    from kd3d_core.threads import apply_threads

    if args.onnx is None and args.torchscript is None:
        raise ConfigError("choose at least one of --onnx PATH and --torchscript PATH")
    refuse_existing([args.onnx, args.torchscript], args.overwrite)
    apply_threads(args.threads)
    if args.onnx is not None:
        export_onnx(args.model, args.onnx, opset=args.opset)
        print(f"wrote {args.onnx}", file=sys.stderr)
    if args.torchscript is not None:
        export_torchscript(args.model, args.torchscript)
        print(f"wrote {args.torchscript}", file=sys.stderr)
    return 0
