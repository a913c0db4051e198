"""Trainer: learns, is deterministic, resumes exactly, stops early, logs; CLI train/export; DDP with gloo."""
import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from kd3d_core.cli import main
from kd3d_core.students.cnn import CNNConfig
from kd3d_core.students.model_file import read_model_meta
from kd3d_core.students.scene_model import load_scene_model
from kd3d_core.training import AugmentConfig, TrainConfig, train_student

TINY_CNN = CNNConfig(channels=(16, 32, 32, 32), head_channels=32, head_layers=1)
BASE = TrainConfig(student="cnn", arch=TINY_CNN, input_size=(64, 48), epochs=6, batch_size=4, lr=3e-3,
                   augment=AugmentConfig(enabled=False), val_fraction=0.2, patience=0, progress=False)


def test_loss_goes_down_and_model_predicts(tiny_scene, tmp_path):
    scene, store = tiny_scene
    cfg = dataclasses.replace(BASE, epochs=30, lr=1e-2, log_dir=tmp_path / "logs")
    result = train_student(scene, store, cfg, tmp_path / "m.kd3d")
    losses = [h.train_points_loss for h in result.history]
    assert np.mean(losses[-3:]) < 0.6 * losses[0]
    assert result.history[-1].val_mean_m < 0.8 * result.history[0].val_mean_m
    assert all(np.isfinite(h.val_mean_m) and h.val_median_m > 0 for h in result.history)
    rows = list(csv.DictReader(open(tmp_path / "logs" / "train_log.csv")))
    assert len(rows) == 30 and float(rows[-1]["train_points_loss"]) == pytest.approx(losses[-1])
    assert (tmp_path / "logs" / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    meta = read_model_meta(tmp_path / "m.kd3d")
    assert meta.world_frame == "map" and meta.teacher["teacher"] == "depth"
    assert meta.training["frames_val"] == 3 and meta.training["val_mean_m"] == min(h.val_mean_m for h in result.history)
    model = load_scene_model(tmp_path / "m.kd3d", device="cpu")
    frame = scene.split("mapping")[0]
    pred = model.predict(frame.load_rgb())
    label = store.read(frame.name)
    cells = label.points_HW3[4::8, 4::8]
    err = np.linalg.norm(pred.points_hw3 - cells, axis=-1)[label.conf_HW[4::8, 4::8] > 0]
    assert np.mean(err) < 0.9 * np.mean(np.linalg.norm(cells - np.array(meta.coord_mean), axis=-1))


def test_deterministic_and_resume_is_exact(tiny_scene, tmp_path, monkeypatch):
    import kd3d_core.training.trainer as trainer

    scene, store = tiny_scene
    cfg = dataclasses.replace(BASE, epochs=2, augment=AugmentConfig(), checkpoint=tmp_path / "a.ckpt")
    train_student(scene, store, cfg, tmp_path / "a.kd3d")
    train_student(scene, store, dataclasses.replace(cfg, checkpoint=None), tmp_path / "b.kd3d",
                  generator=torch.Generator().manual_seed(0))
    # A run killed right after its first epoch's checkpoint, then resumed, ends with the same weights.
    real_save = trainer.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    killed = dataclasses.replace(cfg, checkpoint=tmp_path / "c.ckpt")
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_student(scene, store, killed, tmp_path / "c.kd3d")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert not (tmp_path / "c.kd3d").exists()
    resumed = train_student(scene, store, dataclasses.replace(killed, resume=True), tmp_path / "c.kd3d")
    assert len(resumed.history) == 2
    a, b, c = (load_file(str(tmp_path / f"{n}.kd3d")) for n in "abc")
    for k in a:
        assert torch.equal(a[k], b[k]), k
        assert torch.equal(a[k], c[k]), k
    other = train_student(scene, store, dataclasses.replace(cfg, seed=1, checkpoint=None), None)
    assert other.history[-1].train_loss != resumed.history[-1].train_loss


def test_early_stopping_and_time_budget(tiny_scene):
    scene, store = tiny_scene
    stuck = dataclasses.replace(BASE, epochs=20, lr=1e-12, patience=2)
    result = train_student(scene, store, stuck, None)
    assert result.stop_reason == "early_stopping" and len(result.history) == 3
    budget = train_student(scene, store, dataclasses.replace(BASE, epochs=1000, max_minutes=0.02), None)
    assert budget.stop_reason == "time_budget" and len(budget.history) < 1000


def test_cli_train_then_export_onnx_matches(tiny_scene, tmp_path, capsys):
    scene, _ = tiny_scene
    out = tmp_path / "vit.kd3d"
    rc = main(["train", str(scene.root), "--student", "vit", "--out", str(out), "--size", "64x48", "--epochs", "2",
               "--batch-size", "4", "--arch-opt", "blocks=1", "--arch-opt", "decoder_blocks=1",
               "--arch-opt", "latent=32", "--arch-opt", "heads=2", "--arch-opt", "head_channels=16"])
    assert rc == 0 and "held-out error mean" in capsys.readouterr().err
    assert (tmp_path / "vit_logs" / "train_log.csv").is_file() and Path(f"{out}.ckpt").is_file()
    assert main(["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--torchscript",
                 str(tmp_path / "m.pt")]) == 0
    model = load_scene_model(out, device="cpu")
    images = torch.randint(0, 256, (2, 3, 48, 64)).float()
    points, conf = model.forward_batch(images)
    onnx_points, onnx_conf = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"image": images.numpy()})
    np.testing.assert_allclose(onnx_points, points.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_conf, conf.numpy(), atol=1e-5)
    ts_points, _ = torch.jit.load(str(tmp_path / "m.pt"))(images)
    torch.testing.assert_close(ts_points, points, atol=1e-4, rtol=1e-5)
    assert float(points.std()) > 1e-3  # a trained model, not a constant


def test_cli_errors(tiny_scene, tmp_path, capsys):
    scene, _ = tiny_scene
    assert main(["train", str(scene.root), "--student", "resnet", "--out", str(tmp_path / "x.kd3d")]) == 1
    assert "unknown student 'resnet'" in capsys.readouterr().err
    assert main(["train", str(scene.root), "--student", "cnn", "--freeze-backbone", "--out", "x.kd3d"]) == 1
    assert "does not apply" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "x.kd3d")]) == 1
    assert main(["export", str(tmp_path / "missing.kd3d"), "--onnx", str(tmp_path / "x.onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_ddp_two_cpu_processes(tiny_scene, tmp_path):
    scene, store = tiny_scene
    out = tmp_path / "ddp.kd3d"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "kd3d_core", "train", str(scene.root), "--student", "cnn", "--out", str(out), "--size", "64x48", "--epochs", "2",
           "--batch-size", "2", "--device", "cpu", "--arch-opt", "channels=16,32,32,32",
           "--arch-opt", "head_channels=32", "--arch-opt", "head_layers=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = read_model_meta(out)
    assert meta.training["world_size"] == 2 and meta.training["epochs"] == 2
    # 14 training frames -> 7 per rank, batch 2: 4 steps per epoch on each rank
    assert meta.training["steps"] == 8
    load_scene_model(out, device="cpu")


def test_distill_from_bag(tmp_path, capsys):
    from kd3d_core.bags import write_scene_bag
    from kd3d_core.scene import open_scene
    from kd3d_core.synth import SynthConfig, render_scene

    root = tmp_path / "room"
    render_scene(SynthConfig(preset="tiny", seed=2, mapping_frames=10, query_frames=0, size_wh=(64, 48)), root,
                 progress=False)
    bag = tmp_path / "map_bag"
    write_scene_bag(open_scene(root), bag, depth_topic="/camera/depth/image_raw", progress=False)
    out = tmp_path / "room.kd3d"
    rc = main(["distill", str(bag), "--out", str(out), "--image-topic", "/camera/color/image_raw",
               "--depth-topic", "/camera/depth/image_raw", "--pose-tf", "map", "camera_color_optical_frame",
               "--student", "cnn", "--size", "64x48", "--epochs", "1", "--batch-size", "4", "--arch-opt", "channels=8,16,16"])
    assert rc == 0, capsys.readouterr().err
    meta = read_model_meta(out)
    assert meta.teacher["teacher"] == "depth" and meta.teacher["frames_labelled"] == 10
    assert meta.teacher["scale_source"] == "metric_depth" and meta.world_frame == "map"
    assert (tmp_path / "room_scene" / "labels" / "depth").is_dir()
    # Labels are complete: a second run reuses them instead of teaching again.
    assert main(["distill", str(tmp_path / "room_scene"), "--out", str(out), "--student", "cnn", "--size", "64x48", "--epochs", "1",
                 "--arch-opt", "channels=8,16,16", "--overwrite"]) == 0, capsys.readouterr().err
    assert "reusing labels" in capsys.readouterr().err


def test_distill_defaults_to_the_fast_student(tmp_path, capsys):
    from kd3d_core.synth import SynthConfig, render_scene

    scene = tmp_path / "room"
    render_scene(SynthConfig(preset="tiny", seed=4, mapping_frames=8, query_frames=2, size_wh=(64, 48)), scene,
                 progress=False)
    out = tmp_path / "room.kd3d"
    assert main(["distill", str(scene), "--out", str(out), "--size", "64x48"]) == 0, capsys.readouterr().err
    assert read_model_meta(out).architecture == "fast"
    assert "fast student" in capsys.readouterr().err
