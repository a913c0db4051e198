"""Fast mapping: build the fast student's scene-specific head from a buffer of frozen-encoder features.

`train_fast(scene, labels_dir, out, config)` is the whole `kd3d train --student fast` path: load the mapping
frames and their labels, make the frozen encoder (untrained, generated from its seed; or a weights file), fill
the feature buffer
(fast_buffer.py: one row per labelled output cell), then either
  * KNN head (default): PCA-project and index the buffer (inverted file, spherical k-means) -- seconds; or
  * MLP head (ACE's regression head): train it on random buffer rows (Euclidean or reprojection loss),
and write a self-contained `.kd3d` file (encoder + head). Measured (bench/fast_mapping.py: synthetic rooms, 300
mapping / 100 query frames at 640x480, depth teacher, one thread of a loaded 2-core CPU): KNN with every cell
stored 99 % (office) and 91 % (6 x 5 m living room) of query frames within 5 cm / 5 deg after ~25 s of mapping;
the MLP head 3 % after 2.5 minutes.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kd3d_core.config_utils import check_device
from kd3d_core.errors import ConfigError, Kd3dError, ModelError
from kd3d_core.evaluation.seen import mapping_record
from kd3d_core.geometry import invert_pose, scale_intrinsics
from kd3d_core.localization.roll import mapping_up
from kd3d_core.labels import LabelStore
from kd3d_core.scene import Scene, Split, open_scene
from kd3d_core.students.fast import FastConfig, FastEncoder, FastStudent, HeadKind, KnnHead
from kd3d_core.students.model_file import ModelMeta, save_scene_model
from kd3d_core.students.registry import config_to_dict
from kd3d_core.threads import torch_threads
from kd3d_core.training.fast_buffer import AugmentConfig, FeatureBuffer, MappingView, fill_buffer



class LossKind(str, Enum):
    """Head training loss.

    EUCLIDEAN: distance to the label's world point (labels are dense and metric, so this is the direct signal).
    REPROJECTION: ACE's reprojection error in the label view with a tanh soft clamp shrinking over training
    (curriculum); cells predicted behind the camera or far off fall back to the Euclidean distance.
    """

    EUCLIDEAN = "euclidean"
    REPROJECTION = "reprojection"


class EncoderSource(str, Enum):
    """Where the frozen encoder's weights come from.

    SEEDED: untrained -- He initialisation from `encoder_seed`, rounded to float16, generated when mapping (the
    default; measured better for the kNN memory than the encoders we could pretrain on a CPU, see
    kd3d_core/assets/README.md). The model file stores the weights, so loading never depends on torch's RNG.
    FILE: weights from `encoder_path` (e.g. written by tools/pretrain_encoder.py).
    """

    SEEDED = "seeded"
    FILE = "file"


@dataclass(frozen=True)
class FastTrainConfig:
    """Everything `train_fast` needs (built from CLI flags by the caller).

    Attributes:
        student: architecture of the fast student (encoder shape must match the encoder file).
        input_height: network input height; the width follows the scene's aspect (multiples of 8).
        encoder: seeded untrained encoder (default) or a weights file (see EncoderSource).
        encoder_path: encoder weights file (implies EncoderSource.FILE).
        encoder_seed: seed of the SEEDED encoder.
        buffer_size: feature buffer rows for the MLP head (the KNN head stores `student.knn_size` rows).
        augment: augmentation of mapping views while filling the buffer (off by default: with the KNN head
            the stored cells are best spent on the real mapping views; measured 100 % vs 92 % recall).
            Storing photometric copies next to the real views did not pay either (2026-12-01, bench rooms at
            200 mapping / 30 query frames, noise-free: each view once more at a gain drawn from 0.35-0.7 and
            once from 1.4-2.0, 710k cells, 16 MB): low-texture room at gain x0.5 9 -> 9 of 30 frames within
            5 cm / 5 deg, at x1.6 6 -> 9; living room at x1.6 within 2 cm / 2 deg 23 -> 28 but within 5 cm
            30 -> 29, JPEG q25 29 -> 28.
        iterations: head training steps.
        batch_size: buffer rows per step.
        lr_max, lr_min: one-cycle learning-rate range.
        loss: head loss (see LossKind).
        conf_threshold_m: the confidence output learns P(error < this).
        bf16: run the head in bfloat16 autocast (several times faster on CPUs with AVX-512 BF16).
        seed: seeds augmentation, buffer sampling and head initialisation.
        threads: torch CPU threads to use while training (restored afterwards); None leaves torch's setting.
            On a shared, loaded CPU one thread is much faster than two (OpenMP threads wait on each other).
        device: "cpu", "cuda" or "auto".
    """

    student: FastConfig = field(default_factory=FastConfig)
    input_height: int = 240
    encoder: EncoderSource = EncoderSource.SEEDED
    encoder_path: Path | None = None
    encoder_seed: int = 0
    buffer_size: int = 1_000_000
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(enabled=False))
    iterations: int = 3000
    batch_size: int = 4096
    lr_max: float = 3e-3
    lr_min: float = 3e-4
    loss: LossKind = LossKind.EUCLIDEAN
    conf_threshold_m: float = 0.1
    bf16: bool = True
    seed: int = 0
    threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.encoder_path is not None:
            object.__setattr__(self, "encoder", EncoderSource.FILE)
        if self.encoder is EncoderSource.FILE and self.encoder_path is None:
            raise ConfigError("a FILE encoder needs encoder_path")
        if self.input_height < 8 or self.input_height % 8:
            raise ConfigError(f"fast input height must be a positive multiple of 8, got {self.input_height}")
        if self.buffer_size < self.batch_size or self.batch_size < 1 or self.iterations < 1:
            raise ConfigError("fast training needs iterations >= 1 and buffer_size >= batch_size >= 1")
        if not 0 < self.lr_min <= self.lr_max:
            raise ConfigError(f"need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}")
        check_device(self.device)  # a misspelt or absent device fails here, before any work


@dataclass(frozen=True)
class FastTrainResult:
    """What a fast training run produced and how long each part took."""

    student: FastStudent
    meta: ModelMeta
    views: int
    buffer_rows: int
    buffer_passes: int
    load_s: float
    buffer_s: float
    train_s: float
    final_loss: float
    median_train_error_m: float

    @property
    def total_s(self) -> float:
        """Mapping time: loading + buffer + head training."""
        return self.load_s + self.buffer_s + self.train_s


def input_size_for(image_wh: tuple[int, int], height: int) -> tuple[int, int]:
    """Network input (w, h): the given height, width from the aspect ratio rounded to a multiple of 8."""
    w, h = image_wh
    return max(8, int(round(w * height / h / 8)) * 8), height


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_mapping_views(scene: Scene, store: LabelStore, input_wh: tuple[int, int],
                       progress: bool = True) -> list[MappingView]:
    """Mapping frames that have labels, resized to the network input size, with their labels."""
    import cv2

    labelled = set(store.names())
    frames = [f for f in scene.split(Split.MAPPING) if f.name in labelled]
    if not frames:
        raise Kd3dError(f"no mapping frame of {scene.root} has a label in {store.root}; run `kd3d teach` first")
    views = []
    for frame in tqdm(frames, desc="load mapping views", unit="frame", disable=not progress):
        label = store.read(frame.name)
        rgb = frame.load_rgb()
        K_image = scale_intrinsics(frame.K, input_wh[0] / rgb.shape[1], input_wh[1] / rgb.shape[0])
        if (rgb.shape[1], rgb.shape[0]) != input_wh:
            interp = cv2.INTER_AREA if rgb.shape[1] > input_wh[0] else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, input_wh, interpolation=interp)
        points = label.points_HW3.astype(np.float32)
        valid = (label.conf_HW > 0) & np.all(np.isfinite(points), axis=-1)
        views.append(MappingView(frame.name, rgb, points, valid, label.K.astype(np.float64),
                                 invert_pose(label.world_T_cam.astype(np.float64)), K_image))
    return views


def load_encoder_weights(student: FastStudent, config: FastTrainConfig) -> str:
    """Set the frozen encoder of `student`; returns a description for the model file's training summary."""
    if config.encoder is EncoderSource.SEEDED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.encoder_seed)
            seeded = FastEncoder(config.student)
        student.encoder.load_state_dict(seeded.state_dict())
        return f"untrained (He initialisation, seed {config.encoder_seed}, float16)"
    from safetensors.torch import load_file

    path = Path(config.encoder_path)  # type: ignore[arg-type] - FILE implies a path (__post_init__)
    if not path.is_file():
        raise ModelError(f"fast encoder weights {path} not found")
    try:
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        student.encoder.load_state_dict(state, strict=True)
    except Exception as err:  # noqa: BLE001 - safetensors and torch raise several types for a bad file
        raise ModelError(f"{path} does not fit the fast encoder {config.student}: {err}") from err
    return path.name


def _lr_at(step: int, config: FastTrainConfig) -> float:
    """One-cycle schedule: linear warm-up over 10 % of the steps, then cosine down to lr_min."""
    warm = max(1, config.iterations // 10)
    if step < warm:
        return config.lr_min + (config.lr_max - config.lr_min) * step / warm
    t = (step - warm) / max(1, config.iterations - warm)
    return config.lr_min + 0.5 * (config.lr_max - config.lr_min) * (1 + math.cos(math.pi * t))


def _reprojection_loss(pred_N3: torch.Tensor, target_N3: torch.Tensor, buf: FeatureBuffer, rows: torch.Tensor,
                       progress_frac: float) -> torch.Tensor:
    """ACE-style soft-clamped reprojection error (pixels of the label grid) with a Euclidean fallback."""
    world_N3 = pred_N3 + buf.mean_3.float()
    T_N34 = buf.cam_T_world_V34[buf.view_N[rows]]
    cam_N3 = torch.einsum("nij,nj->ni", T_N34[:, :, :3], world_N3) + T_N34[:, :, 3]
    K_N33 = buf.K_V33[buf.view_N[rows]]
    z = cam_N3[:, 2].clamp(min=0.1)
    uv_N2 = torch.stack([K_N33[:, 0, 0] * cam_N3[:, 0] / z + K_N33[:, 0, 2],
                         K_N33[:, 1, 1] * cam_N3[:, 1] / z + K_N33[:, 1, 2]], dim=-1)
    err_N = (uv_N2 - buf.px_N2[rows]).abs().sum(-1)
    # Thresholds in pixels scale with the label grid (ACE's values are for 480-pixel-high images).
    px_scale = float(K_N33[0, 1, 2] * 2 / 480)
    valid = (cam_N3[:, 2] > 0.1) & (err_N < 1000 * px_scale)
    w = 1 - math.sqrt(1 - progress_frac ** 2)
    clamp = ((1 - w) * 50 + 1) * px_scale
    loss_valid = (clamp * torch.tanh(err_N[valid] / clamp)).sum()
    loss_invalid = (pred_N3[~valid] - target_N3[~valid]).abs().sum() * 100 * px_scale
    return (loss_valid + loss_invalid) / len(err_N)


def standardise_features(buf: FeatureBuffer, generator: torch.Generator,
                         chunk: int = 262_144) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise the buffer's features per channel in place; returns (mean, std) for `fold_standardisation`.

    A frozen encoder's channels have arbitrary scales (tiny ones for an untrained encoder); unit-scale inputs let
    the head learn at one learning rate whatever the encoder.
    """
    n = len(buf)
    sample = buf.features_NC[torch.randint(0, n, (min(n, 100_000),), generator=generator)].float()
    mean, std = sample.mean(0), sample.std(0).clamp(min=1e-6)
    for a in range(0, n, chunk):
        buf.features_NC[a:a + chunk] = ((buf.features_NC[a:a + chunk].float() - mean) / std).to(buf.features_NC.dtype)
    return mean, std


@torch.no_grad()
def fold_standardisation(student: FastStudent, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Fold the feature standardisation into the head's first layer, so the model sees raw encoder features."""
    inp = student.head.inp
    weight = inp.weight / std.to(inp.weight)
    inp.bias.sub_(weight @ mean.to(inp.weight))
    inp.weight.copy_(weight)


@torch.no_grad()
def build_knn_head(config: FastConfig, buf: FeatureBuffer, generator: torch.Generator,
                   chunk: int = 65_536, progress: bool = False) -> KnnHead:
    """The feature memory of a mapped scene: PCA of the standardised buffer features, unit keys, label points.

    Standardisation and projection fold into one affine map (proj, shift), so the head reads raw features.
    Built on one torch thread whatever the caller's count: with two, parallel reductions (the PCA's statistics,
    the k-means sums) add in another order, and those last-bit differences changed every centroid, code and list
    of the memory, so `kd3d train --threads 2` and the bench's one-thread build of the same room gave different
    models (robustness bench rooms, one-thread against two-thread build: office 95.5 against 94.5 % within
    2 cm / 2 deg, living room 99.5 against 98.8 % within 5 cm / 5 deg). Now a
    two-thread `kd3d train` of the office bench room writes a memory bit-identical to the bench's one-thread
    build, in the same time (15.4-16.4 s against 15.2-17.1 s, side by side; the product quantisation's
    distance blocks were made cache-sized for it, _nearest). The buffer fill before it did not depend on the
    thread count there (its features are stored in bfloat16).
    """
    with torch_threads(1):
        return _build_knn_head(config, buf, generator, chunk, progress)


def _build_knn_head(config: FastConfig, buf: FeatureBuffer, generator: torch.Generator, chunk: int,
                    progress: bool) -> KnnHead:
    n = len(buf)
    config = dataclasses.replace(config, knn_size=n)
    head = KnnHead(config)
    sample = buf.features_NC[torch.randint(0, n, (min(n, 50_000),), generator=generator)].float()
    mean, std = sample.mean(0), sample.std(0).clamp(min=1e-6)
    V = torch.linalg.svd((sample - mean) / std, full_matrices=False).Vh[:config.knn_dim].T
    head.proj.copy_(V / std[:, None])
    head.shift.copy_((mean / std) @ V)
    keys = torch.cat([torch.nn.functional.normalize(buf.features_NC[a:a + chunk].float() @ head.proj - head.shift,
                                                    dim=-1) for a in range(0, n, chunk)])
    centroids, assign = spherical_kmeans(keys, config.knn_lists, generator, progress=progress)
    order = torch.argsort(assign)
    head.store(keys[order], buf.points_N3[order], generator)
    head.centroids.copy_(centroids)
    head.offsets.copy_(torch.cat([torch.zeros(1, dtype=torch.long),
                                  torch.bincount(assign, minlength=config.knn_lists).cumsum(0)]))
    return head


def spherical_kmeans(keys_Nd: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 8,
                     chunk: int = 65_536, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on unit vectors by cosine similarity: centroids (k, d) and each key's list (N,).

    The centroids are fitted on at most 128 keys per list (a random sample: the lists only need to split the
    key space evenly, and fitting on all 300k keys took 8x longer), then every key is assigned once.
    """
    n = keys_Nd.shape[0]
    perm = torch.randperm(n, generator=generator)
    sample = keys_Nd[perm[:min(n, 128 * k)]]
    centroids = sample[:k].clone()
    if centroids.shape[0] < k:  # fewer keys than lists: pad with copies (empty lists are harmless)
        centroids = centroids[torch.arange(k) % centroids.shape[0]]
    for _ in tqdm(range(iterations), desc="build kNN memory", unit="pass", disable=not progress):
        assign = torch.cat([(sample[a:a + chunk] @ centroids.T).argmax(dim=1) for a in range(0, len(sample), chunk)])
        sums = torch.zeros_like(centroids).index_add_(0, assign, sample)
        filled = torch.bincount(assign, minlength=k) > 0
        centroids[filled] = torch.nn.functional.normalize(sums[filled], dim=-1)
    assign = torch.cat([(keys_Nd[a:a + chunk] @ centroids.T).argmax(dim=1) for a in range(0, n, chunk)])
    return centroids, assign


def train_head(student: FastStudent, buf: FeatureBuffer, config: FastTrainConfig, device: torch.device,
               generator: torch.Generator, progress: bool = True) -> tuple[float, float]:
    """Train the head on random buffer rows; returns (mean loss of the last 5 % steps, median error in m)."""
    head = student.head.to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr_min, weight_decay=0.0)
    n, losses, errs = len(buf), [], []
    use_bf16 = config.bf16 and device.type == "cpu"
    for step in tqdm(range(config.iterations), desc="train head", unit="step", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, config)
        rows = torch.randint(0, n, (config.batch_size,), generator=generator)
        feats = buf.features_NC[rows].to(device)
        target = buf.points_N3[rows].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred, logit = head.forward_flat(feats if use_bf16 else feats.float())
        err = (pred - target).norm(dim=-1)
        if config.loss is LossKind.EUCLIDEAN:
            loss = err.mean()
        else:
            loss = _reprojection_loss(pred, target, buf, rows, step / config.iterations)
        conf_target = (err.detach() < config.conf_threshold_m).float()
        loss = loss + 0.1 * torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), conf_target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= config.iterations * 0.95:
            losses.append(float(loss.detach()))
            errs.append(err.detach().median().item())
    head.eval()
    return float(np.mean(losses)), float(np.median(errs))


def train_fast(scene: Path | str | Scene, labels_dir: Path | str, out: Path | str | None,
               config: FastTrainConfig = FastTrainConfig(), progress: bool = True) -> FastTrainResult:
    """Map a scene: fill the feature buffer, train the head, write the `.kd3d` model file (when `out` is given).

    Args:
        scene: scene folder (or an opened Scene) whose mapping split has labels.
        labels_dir: the teacher's label folder (kd3d_core.labels.LabelStore).
        out: model file to write; None keeps the result in memory only (benchmarks, tests).
        config: training configuration.
        progress: show progress bars on stderr.
    """
    with torch_threads(torch.get_num_threads() if config.threads is None else config.threads):
        result = _map_scene(scene if isinstance(scene, Scene) else open_scene(scene), LabelStore(labels_dir),
                            config, progress)
    if out is not None:
        result = dataclasses.replace(result, meta=save_scene_model(out, result.student, result.meta))
    return result


def _map_scene(scene: Scene, store: LabelStore, config: FastTrainConfig, progress: bool) -> FastTrainResult:
    labels_meta = store.read_meta()
    device = _resolve_device(config.device)
    start = time.perf_counter()
    input_wh = input_size_for(scene.info.color_size, config.input_height)
    views = load_mapping_views(scene, store, input_wh, progress)
    load_s = time.perf_counter() - start
    torch.manual_seed(config.seed)
    student = FastStudent(config.student)
    encoder_desc = load_encoder_weights(student, config)
    student.encoder.to(device).eval().requires_grad_(False)
    start = time.perf_counter()
    rows = config.student.knn_size if config.student.head is HeadKind.KNN else config.buffer_size
    buf = fill_buffer(student.encoder, views, rows, config.augment, np.random.default_rng(config.seed),
                      progress=progress)
    buffer_s = time.perf_counter() - start
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed + 1)
    if config.student.head is HeadKind.KNN:
        student.head = build_knn_head(config.student, buf, generator, progress=progress)
        student.config = dataclasses.replace(config.student, knn_size=len(buf))
        final_loss, median_err, steps = float("nan"), 0.0, 0
    else:
        feat_mean, feat_std = standardise_features(buf, generator)
        final_loss, median_err = train_head(student, buf, config, device, generator, progress)
        fold_standardisation(student, feat_mean, feat_std)
        steps = config.iterations
    train_s = time.perf_counter() - start
    meta = ModelMeta(
        architecture="fast", config=config_to_dict(student.config), input_size=input_wh, output_stride=8,
        coord_mean=tuple(float(v) for v in buf.mean_3), coord_scale=1.0, world_frame=labels_meta.world_frame,
        mapping_up=mapping_up(v.cam_T_world for v in views),
        training={"trainer": "fast", "encoder": encoder_desc, "views": len(views), "buffer_rows": len(buf),
                  "buffer_passes": buf.passes, "head": config.student.head.value, "iterations": steps, "batch_size": config.batch_size,
                  "loss": config.loss.value, "seed": config.seed, "load_s": round(load_s, 2),
                  "buffer_s": round(buffer_s, 2), "train_s": round(train_s, 2), "final_loss": None if math.isnan(final_loss) else final_loss,
                  "median_train_error_m": median_err},
        teacher={"teacher": labels_meta.teacher, "scale_source": labels_meta.scale_source.value,
                 "checkpoint_digest": labels_meta.checkpoint_digest, "frames": len(views),
                 "mapping": mapping_record(scene, [v.name for v in views])})
    return FastTrainResult(student.cpu().eval(), meta, len(views), len(buf), buf.passes, load_s, buffer_s, train_s,
                           final_loss, median_err)


def describe(config: FastTrainConfig) -> dict:
    """JSON-ready summary of a config (for logs and benchmark tables)."""
    d = dataclasses.asdict(config)
    d["loss"], d["encoder"] = config.loss.value, config.encoder.value
    d["encoder_path"] = str(config.encoder_path) if config.encoder_path else None
    return d
