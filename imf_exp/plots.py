"""Figures written into the run folder. Each takes arrays and a path; none needs a trainer."""

from __future__ import annotations

import math
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


def _save(fig, path: Path, title: str = "", dpi: int = 110, tight: bool = True) -> Path:
    """Title, tight layout (``tight=False``: a figure with its own layout engine), write the PNG
    (creating its folder), close the figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    if tight:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


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
    return _save(fig, path, title)


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
    return _save(fig, path)


def image_side(dim: int) -> int | None:
    """``sqrt(dim)`` when ``dim > 2`` is a perfect square (square images such as 8x8 digits), else None."""
    side = math.isqrt(int(dim))
    return side if dim > 2 and side * side == dim else None


def _image_tile(images: np.ndarray, shape: tuple[int, int], cols: int) -> np.ndarray:
    """``(n, h*w)`` images -> one ``(rows*h, cols*w)`` mosaic with 1-pixel gaps (NaN)."""
    h, w = shape
    rows = int(np.ceil(len(images) / cols))
    tile = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = img.reshape(h, w)
    return tile


def plot_image_samples(reference: np.ndarray, panels: Mapping[str, np.ndarray], path: Path,
                       shape: tuple[int, int], title: str = "",
                       metrics: Mapping[str, float] | None = None, count: int = 36) -> Path:
    """Image datasets: a mosaic of the first ``count`` images per panel (native pixel values)."""
    items = [("reference", np.asarray(reference))] + [(k, np.asarray(v)) for k, v in panels.items()]
    cols = int(np.ceil(np.sqrt(count)))
    ref = items[0][1][:count]  # the reference sets the grey scale of every panel
    lo, hi = float(np.nanmin(ref)), float(np.nanmax(ref))
    fig, axes = plt.subplots(1, len(items), figsize=(2.8 * len(items), 3.2), squeeze=False)
    for ax, (name, imgs) in zip(axes[0], items):
        ax.imshow(_image_tile(imgs[:count], shape, cols), cmap="gray_r", vmin=lo, vmax=hi)
        label = name
        if metrics and f"{name}/w2_ratio" in metrics:
            label += f"\nW2 ratio {metrics[f'{name}/w2_ratio']:.2f}"
            if f"{name}/accuracy" in metrics:
                label += f", acc {metrics[f'{name}/accuracy']:.2f}"
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    return _save(fig, path, title)


def plot_class_grid(model, dataset, path: Path, omegas: Sequence[float] = (1.0, 2.0, 4.0),
                    per_class: int = 6, nfe: int = 1, interval: Sequence[float] = (0.0, 1.0),
                    sampling: str = "average", seed: int = 0, reference=None) -> Path:
    """Class-conditional samples of a guided model at several ``omega`` (one NFE by default).

    Images: rows are classes, one block of ``per_class`` columns per ``omega``. 2-D data: one
    panel per ``omega``, samples coloured by the class asked for, over the reference in grey.
    """
    import torch

    from imf_exp.objectives.guidance import Condition
    from imf_exp.sampling import generate

    k = dataset.num_classes
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    n_each = per_class if dataset.dim > 2 else max(per_class, 200)
    labels = torch.arange(k).repeat_interleave(n_each)
    z1 = torch.randn(len(labels), dataset.dim, generator=g).to(device)
    outs = []
    for w in omegas:
        cond = Condition.build(labels, w, interval).to(device)
        x = generate(model, z1, sampling, nfe, cond=cond).float().cpu()
        outs.append(dataset.destandardize(x.double()).numpy() if dataset.dim > 2 else x.numpy())
    if dataset.dim > 2:
        shape = (image_side(dataset.dim),) * 2
        fig, axes = plt.subplots(1, len(omegas), figsize=(1.1 + 0.45 * per_class * len(omegas),
                                                          0.5 * k + 0.8), squeeze=False)
        for ax, w, x in zip(axes[0], omegas, outs):
            ax.imshow(_image_tile(x, shape, per_class), cmap="gray_r", vmin=0, vmax=16)
            ax.set_title(f"omega = {w:g}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([(shape[0] + 1) * i + shape[0] / 2 for i in range(k)])
            ax.set_yticklabels([str(i) for i in range(k)], fontsize=7)
    else:
        ref = None if reference is None else np.asarray(reference)
        lim = _lim(outs + ([ref] if ref is not None else []))
        fig, axes = plt.subplots(1, len(omegas), figsize=(3.2 * len(omegas), 3.4), squeeze=False)
        for ax, w, x in zip(axes[0], omegas, outs):
            if ref is not None:
                ax.scatter(ref[:, 0], ref[:, 1], s=1, color="0.8", lw=0)
            ax.scatter(x[:, 0], x[:, 1], s=2, c=labels.numpy(), cmap="tab10", vmin=0, vmax=9, lw=0)
            ax.set_title(f"omega = {w:g}", fontsize=9)
            ax.set(xlim=lim, ylim=lim, aspect="equal", xticks=[], yticks=[])
    return _save(fig, path, f"{dataset.name}: class-conditional samples, {nfe} NFE")
