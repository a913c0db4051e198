"""The real DUSt3R path end to end with a tiny random model: preprocessing, pairs, batched inference, cache and
resume, alignment, label files; plus sharding over two torchrun processes (gloo)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kd3d_core.cli import main as cli_main
from kd3d_core.labels import LabelStore
from kd3d_core.scene import Split, open_scene
from kd3d_core.teachers import Dust3rConfig, PairGraphConfig, TeachConfig, TeacherKind, make_pairs, teach_scene
from kd3d_core.teachers.config import DeviceChoice
from kd3d_core.teachers.pair_cache import PairCache


def _config(ckpt: Path, labels: Path, window: int = 2) -> TeachConfig:
    return TeachConfig(teacher=TeacherKind.DUST3R, labels_dir=labels, label_size=(32, 32), progress=False,
                       dust3r=Dust3rConfig(checkpoint=str(ckpt), size=224, batch=3, device=DeviceChoice.CPU,
                                           pairs=PairGraphConfig(window=window)))


def _shard_counts(labels: Path) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in p.read_text().split()) for p in sorted(labels.glob("shard-*.txt"))]


def test_dust3r_end_to_end_with_resume(synth_scene, tiny_checkpoint, tmp_path, monkeypatch):
    labels = tmp_path / "labels"
    frames = open_scene(synth_scene).split(Split.MAPPING)
    n_pairs = len(make_pairs(len(frames), PairGraphConfig(window=2)))
    real_write, calls = PairCache.write, []

    def dying_write(self, fw, bw):  # simulate a run killed after three pairs
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append((fw.i, fw.j))
        real_write(self, fw, bw)

    monkeypatch.setattr(PairCache, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        teach_scene(synth_scene, _config(tiny_checkpoint, labels))
    monkeypatch.setattr(PairCache, "write", real_write)
    assert len(list(labels.glob("pairs/*/*.npz"))) == 3

    result = teach_scene(synth_scene, _config(tiny_checkpoint, labels))
    assert _shard_counts(labels) == [(n_pairs - 3, 3)]  # only the missing pairs were computed
    assert result.frames == len(frames) == result.labelled + len(result.failed)
    store = LabelStore(labels)
    meta = store.read_meta()
    assert meta.teacher == "dust3r" and meta.label_size == (32, 32) and meta.checkpoint_digest.startswith("sha256:")
    assert meta.extra["pairs"] == n_pairs and meta.extra["complete"] is True
    assert set(meta.extra["pair_diagnostics"]) == {"pairs", "RRA@15", "RTA@15", "mAA@30"}
    assert set(store.names()) | set(meta.failed_frames) == {f.name for f in frames}
    label = store.read(store.names()[0])
    assert label.points_HW3.shape == (32, 32, 3) and np.isfinite(label.points_HW3).all()
    assert label.conf_HW.min() >= 0 and label.conf_HW.max() < 1 and label.K[0, 0] > 0

    # a rerun computes nothing new
    teach_scene(synth_scene, _config(tiny_checkpoint, labels))
    assert _shard_counts(labels) == [(0, n_pairs)]


def test_cli_without_checkpoint_is_one_clear_error(synth_scene, tmp_path, capsys):
    rc = cli_main(["teach", str(synth_scene), "--teacher", "dust3r", "--labels-dir", str(tmp_path / "l")])
    assert rc == 1 and "needs a checkpoint" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_sharding_two_cpu_processes(synth_scene, tiny_checkpoint, tmp_path):
    labels = tmp_path / "labels"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "kd3d_core", "teach", str(synth_scene), "--teacher", "dust3r", "--checkpoint", str(tiny_checkpoint),
           "--size", "224", "--label-size", "32x32", "--window", "1", "--device", "cpu", "--batch", "4",
           "--labels-dir", str(labels), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n_pairs = len(make_pairs(6, PairGraphConfig(window=1)))
    counts = _shard_counts(labels)
    assert len(counts) == 2 and all(c > 0 for c, _ in counts) and sum(c for c, _ in counts) == n_pairs
    assert len(list(labels.glob("pairs/*/*.npz"))) == n_pairs
    assert LabelStore(labels).read_meta().extra["complete"] is True
