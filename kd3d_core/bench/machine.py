"""What the benchmark ran on: CPU, cores, load, memory, accelerator and library versions."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def code_version(root: Path | None = None) -> str | None:
    """The kd3d commit the benchmark ran ("abc1234", "+ uncommitted changes" when the tracked files differ), or
    None when kd3d is not run from a git checkout (an installed package) or git is missing."""
    root = root or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None  # kd3d sits inside some other repository (a site-packages under a git tree)
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit} + uncommitted changes" if dirty else commit


def machine_info(device: str) -> dict:
    """A JSON-ready description of the machine; the load average says how shared the CPU was."""
    import cv2
    import numpy as np
    import torch

    cuda = torch.cuda.is_available() and device != "cpu"
    info = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": _memory_gb(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "device": "cuda" if cuda else "cpu",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "kd3d_code": code_version(),
    }
    return info


def machine_tag(info: dict) -> str:
    """Short machine name for result file names, e.g. 'cpu2' or 'h100'."""
    if info.get("gpu"):
        name = str(info["gpu"]).lower()
        for key in ("h200", "h100", "a100", "l40", "a10", "t4", "v100", "4090", "3090"):
            if key in name:
                return key
        return "gpu"
    return f"cpu{info.get('affinity_cpus') or info.get('cpu_count')}"
