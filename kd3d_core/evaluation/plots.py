"""Evaluation plots as PNG (matplotlib's Agg canvas directly: no pyplot state, no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kd3d_core.evaluation.metrics import RECALL_THRESHOLDS, EvaluationResult
from kd3d_core.io_utils import atomic_file


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_error_cdf(result: EvaluationResult, path: Path | str) -> Path:
    """Cumulative distribution of translation (cm) and rotation (degrees) errors over all reference frames.

    Missing frames never reach the curve's top, so the plateau shows the share of failures.
    """
    path = Path(path)
    fig = Figure(figsize=(9, 3.6))
    n = max(len(result.frames), 1)
    for ax, errors, unit, scale, marks in (
            (fig.add_subplot(1, 2, 1), result.translation_m, "translation error [cm]", 100.0,
             [t * 100 for t, _, _ in RECALL_THRESHOLDS]),
            (fig.add_subplot(1, 2, 2), result.rotation_deg, "rotation error [deg]", 1.0,
             [r for _, r, _ in RECALL_THRESHOLDS])):
        finite = np.sort(errors[np.isfinite(errors)]) * scale
        ax.step(np.r_[0.0, finite], np.arange(len(finite) + 1) / n, where="post", color="tab:blue")
        for m in marks:
            ax.axvline(m, color="0.7", lw=0.8, ls="--")
        top = max(marks[-1] * 2, float(np.percentile(finite, 95)) if len(finite) else 0.0)
        ax.set_xlim(0, top)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(unit)
        ax.set_ylabel("fraction of frames")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(result.frames)} frames, {int(np.isfinite(result.translation_m).sum())} localized")
    fig.tight_layout()
    _save(fig, path)
    return path


def colour_scale_top(err_cm: np.ndarray) -> float:
    """Top of the error colour scale: the 95th percentile of the errors rounded up to 1-2-5 steps (>= 0.5 cm).

    A fixed 0-20 cm scale made every error under a few cm the same colour; the percentile keeps one outlier from
    flattening the rest (larger errors are clipped to the top colour, and the colour bar says so).
    """
    finite = err_cm[np.isfinite(err_cm)]
    p95 = float(np.percentile(finite, 95)) if finite.size else 0.0
    for step in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):
        if p95 <= step:
            return float(step)
    return float(np.ceil(p95 / 1000.0) * 1000.0)


def plot_trajectory(result: EvaluationResult, path: Path | str) -> Path:
    """Top-down view of reference and estimated camera centres (the two axes with the largest spread).

    Estimates are coloured by translation error and joined to their reference frame.
    """
    path = Path(path)
    ref = result.reference_poses[:, :3, 3]
    est = result.estimated_poses[:, :3, 3]
    axes = np.sort(np.argsort(np.var(ref, axis=0) if len(ref) else np.ones(3))[-2:])
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ref[:, axes[0]], ref[:, axes[1]], "-", color="0.3", lw=1.2, label="reference")
    ok = np.all(np.isfinite(est), axis=1)
    for r, e in zip(ref[ok], est[ok]):
        ax.plot([r[axes[0]], e[axes[0]]], [r[axes[1]], e[axes[1]]], "-", color="tab:red", lw=0.5, alpha=0.6)
    err_cm = result.translation_m[ok] * 100
    top = colour_scale_top(err_cm)
    sc = ax.scatter(est[ok, axes[0]], est[ok, axes[1]], c=np.minimum(err_cm, top), cmap="viridis", s=12,
                    vmin=0, vmax=top, label="estimate", zorder=3)
    fig.colorbar(sc, ax=ax, label=f"translation error [cm] (clipped at {top:g})")
    if (~ok).any():
        ax.scatter(ref[~ok, axes[0]], ref[~ok, axes[1]], marker="x", color="tab:red", s=20, label="not localized")
    names = "xyz"
    ax.set_xlabel(f"{names[axes[0]]} [m]")
    ax.set_ylabel(f"{names[axes[1]]} [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return path
