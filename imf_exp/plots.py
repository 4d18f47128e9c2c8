"""Figures written into the run folder. Each takes arrays and a path; none needs a trainer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _lim(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    allpts = np.concatenate([a[:, :2] for a in arrays])
    lo, hi = np.percentile(allpts, [0.5, 99.5])
    pad = 0.1 * (hi - lo)
    return lo - pad, hi + pad


def plot_samples(reference: np.ndarray, panels: Mapping[str, np.ndarray], path: Path,
                 title: str = "", metrics: Mapping[str, float] | None = None) -> Path:
    """Reference points beside each generated set (first two coordinates), same axes."""
    items = [("reference", np.asarray(reference))] + [(k, np.asarray(v)) for k, v in panels.items()]
    lim = _lim([a for _, a in items])
    fig, axes = plt.subplots(1, len(items), figsize=(3.2 * len(items), 3.4), squeeze=False)
    for ax, (name, pts) in zip(axes[0], items):
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.6, lw=0,
                   color="black" if name == "reference" else "tab:blue")
        label = name
        if metrics and f"{name}/w2_ratio" in metrics:
            label += (f"\nW2 ratio {metrics[f'{name}/w2_ratio']:.2f}, "
                      f"P {metrics[f'{name}/precision']:.2f}, R {metrics[f'{name}/recall']:.2f}")
        ax.set_title(label, fontsize=9)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Training loss terms (and learning rate) against step."""
    steps = [h["step"] for h in history]
    keys = [k for k in history[0] if k.startswith("loss")] if history else []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        ax.plot(steps, [h[k] for h in history], label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (adaptive metric)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
