"""Training records: per-epoch CSV (always), TensorBoard events (when `tensorboard` is installed), and a
loss-curve PNG (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kd3d_core.io_utils import atomic_file, atomic_write_text


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's numbers (held-out errors are NaN when there is no held-out split)."""

    epoch: int
    step: int
    train_loss: float
    train_points_loss: float
    val_mean_m: float
    val_median_m: float
    lr: float
    seconds: float


class TrainingLog:
    """Writes the records of a run into `log_dir` (train_log.csv, loss_curve.png, tensorboard/)."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = Path(log_dir) if log_dir else None
        self._tb = None
        self._history: list[EpochRecord] = []
        self._last_plot = 0.0
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.log_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    @property
    def csv_path(self) -> Path | None:
        return self.log_dir / "train_log.csv" if self.log_dir else None

    def write(self, history: list[EpochRecord], plot_every_s: float = 30.0) -> None:
        """Rewrite the CSV for the whole history (atomic); redraw the PNG at most every `plot_every_s`."""
        if self.log_dir is None or not history:
            return
        self._history = list(history)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(EpochRecord)])
        writer.writeheader()
        for rec in history:
            writer.writerow(asdict(rec))
        atomic_write_text(self.csv_path, buf.getvalue())
        if self._tb is not None:
            rec = history[-1]
            for key in ("train_loss", "val_mean_m", "val_median_m", "lr"):
                self._tb.add_scalar(key, getattr(rec, key), rec.epoch)
            self._tb.flush()
        if time.monotonic() - self._last_plot >= plot_every_s:
            self._plot()

    def _plot(self) -> None:
        plot_loss_curve(self._history, self.log_dir / "loss_curve.png")
        self._last_plot = time.monotonic()

    def close(self) -> None:
        """Draw the final loss curve and close TensorBoard."""
        if self.log_dir is not None and self._history:
            self._plot()
        if self._tb is not None:
            self._tb.close()


def plot_loss_curve(history: list[EpochRecord], path: Path) -> None:
    """Training loss and held-out mean/median error (m) per epoch, log scale, saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in history]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.semilogy(epochs, [max(r.train_loss, 1e-12) for r in history], "b-", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="b")
    ax2 = ax1.twinx()
    ax2.semilogy(epochs, [r.val_mean_m for r in history], "r-", label="held-out mean L2 (m)")
    ax2.semilogy(epochs, [r.val_median_m for r in history], "r--", label="held-out median L2 (m)")
    ax2.set_ylabel("held-out error (m)", color="r")
    fig.legend(loc="upper right")
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
