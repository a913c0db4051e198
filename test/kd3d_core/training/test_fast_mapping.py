"""Fast mapping: cell labels under augmentation, the feature buffer, head training, the encoder asset."""
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kd3d_core.errors import ConfigError, Kd3dError, ModelError
from kd3d_core.students.fast import FastConfig, FastEncoder, HeadKind
from kd3d_core.students.scene_model import load_scene_model
from kd3d_core.training.fast import (EncoderSource, FastTrainConfig, LossKind, input_size_for,
                                     load_encoder_weights, train_fast)
from kd3d_core.training.fast_buffer import AugmentConfig, MappingView, cell_labels, fill_buffer, random_affine

REPO = Path(__file__).resolve().parents[3]
SMALL = FastConfig(stem_channels=(8, 16, 32), block_dilations=(1,), feature_dim=32, head_width=64, head_blocks=1,
                   head=HeadKind.MLP, knn_dim=16, knn_lists=8, knn_probe=2)
TINY = FastTrainConfig(student=SMALL, input_height=48, buffer_size=4000,
                       iterations=200, batch_size=512, lr_max=1e-2, lr_min=1e-3, augment=AugmentConfig(enabled=False))


def _view(w=64, h=48, label_scale=1):
    """A view whose label point at label pixel (u, v) is (u, v, 1): easy to check which pixel was sampled."""
    lw, lh = w // label_scale, h // label_scale
    u, v = np.meshgrid(np.arange(lw, dtype=np.float32), np.arange(lh, dtype=np.float32))
    points = np.stack([u, v, np.ones_like(u)], axis=-1)
    valid = np.ones((lh, lw), bool)
    valid[0, :] = False
    return MappingView("f", np.zeros((h, w, 3), np.uint8), points, valid, np.eye(3), np.eye(4))


def test_cell_labels_identity_samples_the_cell_centre_pixel():
    valid, points, px = cell_labels(_view(label_scale=2), random_affine((64, 48), AugmentConfig(enabled=False), None),
                                    (8, 6))
    # Cell (i, j) -> input pixel (8 j + 4, 8 i + 4) -> label pixel ((8 j + 4.5) / 2 - 0.5) rounded = 4 j + 2.
    assert points.reshape(6, 8, 3)[2, 3].tolist() == [14.0, 10.0, 1.0]
    assert px.reshape(6, 8, 2)[2, 3].tolist() == [14.0, 10.0]
    assert valid.all()


def test_cell_labels_follow_the_augmentation():
    rng = np.random.default_rng(3)
    A = random_affine((64, 48), AugmentConfig(scale=1.5, rotation_deg=30.0), rng)
    valid, points, _ = cell_labels(_view(), A, (8, 6))
    # Mapping the label pixel forward with A must land on the cell's pixel (within rounding).
    cells = np.stack(np.meshgrid(np.arange(8) * 8 + 4, np.arange(6) * 8 + 4), -1).reshape(-1, 2)
    forward = points[:, :2] @ A[:, :2].T + A[:, 2]
    err = np.linalg.norm(forward - cells, axis=1)[valid]
    assert valid.sum() > 10 and err.max() < 1.5
    # Cells that fall outside the original image, or on the invalid top row, are not labelled.
    inv = np.linalg.inv(np.vstack([A, [0, 0, 1]]))[:2]
    src = cells @ inv[:, :2].T + inv[:, 2]
    outside = (src[:, 0] < -0.5) | (src[:, 0] > 63.5) | (src[:, 1] < 0.5) | (src[:, 1] > 47.5)
    assert not valid[outside].any()


def test_fill_buffer_without_augmentation_holds_exactly_the_labels(tiny_scene):
    scene, store = tiny_scene
    from kd3d_core.training.fast import load_mapping_views

    views = load_mapping_views(scene, store, (64, 48), progress=False)
    enc = FastEncoder(SMALL).eval()
    buf = fill_buffer(enc, views, 10**6, AugmentConfig(enabled=False), np.random.default_rng(0), progress=False)
    assert buf.passes == 1 and len(buf) <= len(views) * 48
    world = buf.points_N3.numpy() + buf.mean_3.numpy()
    i = 7
    v = views[int(buf.view_N[i])]
    u_px, v_px = buf.px_N2[i].numpy().astype(int)
    np.testing.assert_allclose(world[i], v.points_hw3[v_px, u_px], atol=1e-4)
    with torch.no_grad():
        feats = enc(torch.zeros(1, 3, 48, 64))
    assert buf.features_NC.shape[1] == feats.shape[1] and buf.features_NC.dtype == torch.bfloat16


@pytest.mark.parametrize("loss", [LossKind.EUCLIDEAN, LossKind.REPROJECTION])
def test_train_fast_learns_and_writes_a_usable_model(tiny_scene, tmp_path, loss):
    scene, store = tiny_scene
    out = tmp_path / "fast.kd3d"
    res = train_fast(scene, store.root, out, replace(TINY, loss=loss), progress=False)
    spread = float(np.median(np.linalg.norm(
        np.concatenate([store.read(n).points_HW3.reshape(-1, 3) for n in store.names()]) - res.meta.coord_mean,
        axis=1)))
    assert res.median_train_error_m < 0.75 * spread  # predicting the mean scores ~1.0 * spread
    model = load_scene_model(out, "cpu")
    assert model.meta.architecture == "fast" and model.meta.training["trainer"] == "fast"
    pred = model.predict(scene.split("query")[0].load_rgb())
    assert pred.points_hw3.shape == (6, 8, 3) and np.isfinite(pred.points_hw3).all()


def test_train_fast_is_deterministic(tiny_scene):
    scene, store = tiny_scene
    cfg = replace(TINY, iterations=10, augment=AugmentConfig(), buffer_size=3000)
    a = train_fast(scene, store.root, None, cfg, progress=False).student.state_dict()
    b = train_fast(scene, store.root, None, cfg, progress=False).student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_labels_and_mismatched_encoder_are_clear_errors(tiny_scene, tmp_path):
    scene, _ = tiny_scene
    with pytest.raises(Kd3dError, match="holds no labels"):
        train_fast(scene, tmp_path / "nothing", None, TINY, progress=False)
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"conv1.weight": torch.zeros(1)}, str(bad))
    from kd3d_core.students.fast import FastStudent

    with pytest.raises(ModelError, match="does not fit"):
        load_encoder_weights(FastStudent(SMALL), replace(TINY, encoder_path=bad))
    with pytest.raises(ModelError, match="not found"):
        load_encoder_weights(FastStudent(SMALL), replace(TINY, encoder_path=tmp_path / "none.safetensors"))
    with pytest.raises(ConfigError, match="needs encoder_path"):
        replace(TINY, encoder=EncoderSource.FILE)


def test_input_size_keeps_the_aspect_ratio_in_multiples_of_eight():
    assert input_size_for((640, 480), 240) == (320, 240)
    assert input_size_for((640, 360), 176) == (312, 176)


def test_seeded_encoder_is_reproducible_float16_and_depends_on_its_seed():
    from kd3d_core.students.fast import FastStudent

    a, b, c = FastStudent(), FastStudent(), FastStudent()
    torch.manual_seed(123)  # the global generator must neither matter nor be disturbed
    before = torch.random.get_rng_state()
    assert "untrained" in load_encoder_weights(a, FastTrainConfig())
    assert torch.equal(torch.random.get_rng_state(), before)
    load_encoder_weights(b, FastTrainConfig())
    load_encoder_weights(c, FastTrainConfig(encoder_seed=1))
    wa, wb, wc = (s.encoder.conv1.weight for s in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert torch.equal(wa, wa.half().float())
    state = a.state_dict()  # model files store the frozen encoder in float16, the head in full precision
    assert state["encoder.conv1.weight"].dtype == torch.float16


def test_pretraining_script_writes_a_loadable_encoder(tmp_path):
    spec = importlib.util.spec_from_file_location("pretrain_encoder", REPO / "tools" / "pretrain_encoder.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool  # dataclasses look their module up there
    spec.loader.exec_module(tool)
    tool.render_rooms(tmp_path / "rooms", ["tiny"], [5], 4, (64, 48))
    out = tmp_path / "enc.safetensors"
    tool.pretrain_encoder(tmp_path / "rooms", out, tool.PretrainConfig(minutes=0.02, crop_wh=(32, 24), batch_views=2,
                                                                          checkpoint_minutes=100), command="test")
    info = __import__("json").loads(out.with_suffix(".json").read_text())
    assert info["steps"] >= 1 and info["data"]["rooms"] == ["tiny_5"]
    from kd3d_core.students.fast import FastStudent

    student = FastStudent()
    load_encoder_weights(student, FastTrainConfig(encoder_path=out))
    assert student.encoder.conv1.weight.dtype == torch.float32


def test_kd3d_train_student_fast_dispatches_to_the_fast_trainer(tiny_scene, tmp_path):
    from safetensors.torch import save_file

    from kd3d_core.cli import main

    scene, store = tiny_scene
    enc = tmp_path / "enc.safetensors"
    save_file({k: v.half().contiguous() for k, v in FastEncoder(SMALL).state_dict().items()}, str(enc))
    out = tmp_path / "cli.kd3d"
    opts = ["--arch-opt", "stem_channels=8,16,32", "--arch-opt", "block_dilations=1", "--arch-opt", "feature_dim=32",
            "--arch-opt", "head_width=64", "--arch-opt", "head_blocks=1", "--arch-opt", "head=mlp", "--arch-opt", "knn_dim=16"]
    rc = main(["train", str(scene.root), "--student", "fast", "--out", str(out), "--size", "64x48",
               "--iterations", "5", "--buffer-size", "1000", "--encoder", str(enc), "--labels-dir", str(store.root),
               *opts])
    assert rc == 0
    model = load_scene_model(out, "cpu")
    assert model.meta.architecture == "fast" and model.meta.input_size == (64, 48)
    assert model.meta.training["encoder"] == "enc.safetensors" and model.meta.training["iterations"] == 5


def test_knn_head_retrieves_the_labels_of_mapping_views(tiny_scene):
    """Every mapping cell is stored, so a mapping image must get (almost all) its own labels back."""
    scene, store = tiny_scene
    cfg = replace(TINY, student=replace(SMALL, head=HeadKind.KNN, knn_size=10**6))
    res = train_fast(scene, store.root, None, cfg, progress=False)
    assert res.meta.config["knn_size"] == res.buffer_rows and res.meta.training["iterations"] == 0
    from kd3d_core.students.scene_model import SceneModel
    from kd3d_core.training.fast_buffer import cell_labels

    model = SceneModel(res.student, res.meta, "cpu")
    frame = scene.split("mapping")[3]
    view = [v for v in __import__("kd3d_core.training.fast", fromlist=["x"]).load_mapping_views(
        scene, store, (64, 48), progress=False) if v.name == frame.name][0]
    valid, points, _ = cell_labels(view, np.eye(2, 3), (8, 6))
    pred = model.predict(frame.load_rgb())
    err = np.linalg.norm(pred.points_hw3.reshape(-1, 3)[valid] - points[valid], axis=1)
    assert np.mean(err < 1e-3) > 0.9 and pred.conf_hw.reshape(-1)[valid].min() > 0.99


def test_knn_inverted_file_with_all_lists_probed_equals_exhaustive_search(tiny_scene):
    scene, store = tiny_scene
    cfg = replace(TINY, student=replace(SMALL, head=HeadKind.KNN, knn_size=2000, knn_lists=8, knn_probe=8))
    head = train_fast(scene, store.root, None, cfg, progress=False).student.head
    feats = torch.randn(50, 32)
    a_points, a_sim = head.lookup(feats)
    head.probe = 0
    b_points, b_sim = head.lookup(feats)
    assert torch.allclose(a_sim, b_sim) and torch.allclose(a_points, b_points)
    assert int(head.offsets[-1]) == head.keys.shape[0]


def test_knn_model_exports_to_onnx_with_matching_outputs(tiny_scene, tmp_path):
    """Export traces the exhaustive search (the inverted file is data dependent); results must agree."""
    import onnxruntime as ort

    from kd3d_core.students.export import export_onnx

    scene, store = tiny_scene
    cfg = replace(TINY, student=replace(SMALL, head=HeadKind.KNN, knn_size=3000, knn_lists=4, knn_probe=4))
    out = tmp_path / "knn.kd3d"
    train_fast(scene, store.root, out, cfg, progress=False)
    onnx_path = export_onnx(out, tmp_path / "knn.onnx")
    model = load_scene_model(out, "cpu")
    image = torch.from_numpy(scene.split("query")[0].load_rgb()).permute(2, 0, 1)[None].float()
    points, conf = model.forward_batch(image)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_points, onnx_conf = session.run(None, {"image": image.numpy()})
    close = np.isclose(onnx_points, points.numpy(), atol=1e-4).all(axis=1)
    assert close.mean() > 0.95  # an exact tie may pick another stored cell
    np.testing.assert_allclose(onnx_conf, conf.numpy(), atol=1e-3)


def test_balanced_choice_keeps_every_seen_surface_before_thickening_any():
    from kd3d_core.training.fast_buffer import balanced_choice

    rng = np.random.default_rng(0)
    dense = np.full((5000, 3), 0.011)  # one voxel seen by every view
    sparse = rng.uniform(1.0, 3.0, (200, 3))  # 200 places seen once
    points = np.concatenate([dense, sparse])
    keep = balanced_choice(points, 300, np.random.default_rng(1))
    assert len(keep) == 300 and len(np.unique(keep)) == 300 and np.all(np.diff(keep) > 0)
    assert np.all(np.isin(np.arange(5000, 5200), keep))  # every rarely seen place survives
    uniform = np.random.default_rng(1).choice(len(points), 300, replace=False)
    assert np.isin(np.arange(5000, 5200), uniform).sum() < 50  # a uniform subset would lose most of them


def test_cell_labels_follow_the_label_intrinsics_of_a_centre_crop():
    """A label grid that is a centre crop of the image (DUSt3R's square inputs) must not be stretched over it."""
    from kd3d_core.geometry import scale_intrinsics

    K_image = np.array([[80.0, 0, 31.5], [0, 80.0, 23.5], [0, 0, 1]])  # 64x48 image
    # Label: the centre 48x48 crop, at 24x24 (scale 0.5).
    K_crop = K_image.copy()
    K_crop[0, 2] -= 8
    K_label = scale_intrinsics(K_crop, 0.5, 0.5)
    lu, lv = np.meshgrid(np.arange(24), np.arange(24))
    points = np.stack([lu, lv, np.zeros_like(lu)], -1).astype(np.float32)  # each label pixel names itself
    view = MappingView("f", np.zeros((48, 64, 3), np.uint8), points, np.ones((24, 24), bool), K_label, np.eye(4),
                       K_image)
    valid, pts, _ = cell_labels(view, np.array([[1.0, 0, 0], [0, 1, 0]]), (8, 6))
    uv = np.stack(np.meshgrid(np.arange(8) * 8 + 4, np.arange(6) * 8 + 4), -1).reshape(-1, 2)
    inside = (uv[:, 0] >= 8) & (uv[:, 0] < 56)
    assert np.array_equal(valid, inside)  # cells left and right of the crop have no label
    expect_u = np.rint((uv[:, 0] - 8 + 0.5) * 0.5 - 0.5)
    assert np.allclose(pts[valid, 0], expect_u[valid]) and np.allclose(pts[valid, 1], np.rint((uv[valid, 1] + 0.5) * 0.5 - 0.5))


def test_knn_memory_build_does_not_depend_on_the_thread_count():
    """The same buffer gives the same memory whatever torch's thread count (kd3d train --threads, the bench's):
    parallel reductions sum in another order with more threads, which used to move every centroid and code."""
    from kd3d_core.training.fast import build_knn_head
    from kd3d_core.training.fast_buffer import FeatureBuffer

    g = torch.Generator().manual_seed(3)
    n = 120_000
    buf = FeatureBuffer(features_NC=torch.randn(n, 32, generator=g).to(torch.bfloat16),
                        points_N3=torch.rand(n, 3, generator=g) * 4, view_N=torch.zeros(n, dtype=torch.long),
                        px_N2=torch.zeros(n, 2), cam_T_world_V34=torch.zeros(1, 3, 4), K_V33=torch.eye(3)[None],
                        mean_3=torch.zeros(3, dtype=torch.float64), passes=1)
    cfg = FastConfig(feature_dim=32, knn_dim=16, knn_lists=64, knn_probe=4, knn_pq=4)
    before = torch.get_num_threads()
    states = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            states.append(build_knn_head(cfg, buf, torch.Generator().manual_seed(0)).state_dict())
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert states[0].keys() == states[1].keys()
    assert [k for k in states[0] if not torch.equal(states[0][k], states[1][k])] == []
