"""`distill`: ingest (when given a bag) -> teach -> train, as one call. A thin composition of the three stages'
own library entry points (kd3d_core.ingest.ingest_bag, kd3d_core.teachers.teach_scene, train_student)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from kd3d_core.errors import ConfigError
from kd3d_core.io_utils import check_output
from kd3d_core.labels import LabelStore
from kd3d_core.scene import open_scene
from kd3d_core.training.config import TrainConfig
from kd3d_core.training.fast import FastTrainConfig


@dataclass(frozen=True)
class DistillConfig:
    """The three stages' configs.

    Attributes:
        scene: the scene folder to teach and train on (the ingest output when `ingest` is given).
        out: the `.kd3d` model file to write.
        train: training settings: a TrainConfig (end-to-end students) or a FastTrainConfig (fast student).
        teach: kd3d_core.teachers.TeachConfig.
        ingest: kd3d_core.ingest.IngestConfig when the input is a bag (its `out` must equal `scene`).
        reuse_labels: skip teaching when complete labels of the same teacher already exist.
    """

    scene: Path
    out: Path
    train: TrainConfig | FastTrainConfig
    teach: object
    ingest: object | None = None
    reuse_labels: bool = True


def _say(text: str, progress: bool) -> None:
    if progress:
        print(f"distill: {text}", file=sys.stderr)


def distill(cfg: DistillConfig):
    """Run ingest (optional), teach and train; returns the TrainResult (FastTrainResult for the fast student).

    The model output is checked for writability and free space first (before any stage). `kd3d distill` removes
    a scene it ingested when a later stage fails.
    """
    progress = getattr(cfg.train, "progress", True)
    check_output(cfg.out)
    if cfg.ingest is not None:
        from kd3d_core.ingest import ingest_bag

        if Path(cfg.ingest.out) != Path(cfg.scene):
            raise ConfigError("distill: the ingest output must be the scene that is taught")
        res = ingest_bag(cfg.ingest)
        _say(f"ingested {res.frames} frames from {cfg.ingest.bag} into {res.path}", progress)
    return _teach_and_train(cfg, progress)


def _teach_and_train(cfg: DistillConfig, progress: bool):
    from kd3d_core.teachers import teach_scene
    from kd3d_core.training.trainer import train_student

    labels_dir = _labels_dir(cfg)
    store = LabelStore(labels_dir)
    if cfg.reuse_labels and _complete(store, cfg.teach.teacher.value):
        _say(f"reusing labels in {labels_dir}", progress)
    else:
        result = teach_scene(cfg.scene, cfg.teach)
        if result is not None:
            _say(f"{result.labelled}/{result.frames} frames labelled by {result.meta.teacher}", progress)
    if isinstance(cfg.train, FastTrainConfig):
        from kd3d_core.training.fast import train_fast

        return train_fast(open_scene(cfg.scene), labels_dir, cfg.out, cfg.train,
                          progress=getattr(cfg.teach, "progress", True))
    return train_student(open_scene(cfg.scene), store, cfg.train, cfg.out)


def _labels_dir(cfg: DistillConfig) -> Path:
    from kd3d_core.labels import default_labels_dir

    return Path(cfg.teach.labels_dir) if cfg.teach.labels_dir else default_labels_dir(cfg.scene,
                                                                                       cfg.teach.teacher.value)


def _complete(store: LabelStore, teacher: str) -> bool:
    """True when the folder holds a finished labelling run of this teacher."""
    try:
        meta = store.read_meta()
    except Exception:  # noqa: BLE001 - no or unreadable labels: teach again
        return False
    return meta.teacher == teacher and meta.extra.get("complete", True) and bool(store.names())
