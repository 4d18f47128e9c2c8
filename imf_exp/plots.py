"""Drawing: numpy arrays in, a PNG out. Nothing here samples a model or reads a run folder
(:mod:`imf_exp.figures` does that, then calls these).

2-D points are drawn as scatter plots on square axes; image data (``dim = s * s > 2``) as
mosaics of ``s x s`` gray images, dark strokes on white, one gray scale per figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

PANEL = 2.6  # inches per panel side
IMAGE_CMAP = "gray_r"  # images: dark strokes on white, in every figure


# ---- helpers ---------------------------------------------------------------------------------
def save(fig, path: Path, title: str = "", dpi: int = 110, tight: bool = True) -> Path:
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


def lim(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """Common square axis limits: the 0.5-99.5th percentile of all points, padded by 10 %."""
    allpts = np.concatenate([a[:, :2] for a in arrays if len(a)])
    lo, hi = np.percentile(allpts, [0.5, 99.5])
    pad = 0.1 * (hi - lo)
    return lo - pad, hi + pad


def finite(a: np.ndarray) -> np.ndarray:
    """The rows of ``a`` without NaN or inf."""
    return a[np.isfinite(a).all(1)]


def image_side(dim: int) -> int | None:
    """``sqrt(dim)`` when ``dim > 2`` is a perfect square (square images such as 8x8 digits), else None."""
    side = math.isqrt(int(dim))
    return side if dim > 2 and side * side == dim else None


def image_tile(images: np.ndarray, shape: tuple[int, int], cols: int) -> np.ndarray:
    """``(n, h*w)`` images -> one ``(rows*h, cols*w)`` mosaic with 1-pixel gaps (NaN)."""
    h, w = shape
    rows = int(np.ceil(len(images) / cols))
    tile = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = img.reshape(h, w)
    return tile


def gray_range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """One gray scale for every image grid of a figure: the 0.5th-99.5th percentile of the pixels
    of ``arrays`` (pass the reference images alone where there are some: samples that overshoot
    the data's range are then clipped instead of dimming the reference)."""
    pixels = np.concatenate([a.ravel() for a in arrays])
    pixels = pixels[np.isfinite(pixels)]
    lo, hi = np.percentile(pixels, [0.5, 99.5]) if len(pixels) else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-6))


def density(ax, ref: np.ndarray, limits: tuple[float, float]) -> None:
    """The reference density, faintly: a square-root-shaded 2-D histogram over the axes."""
    hist, _, _ = np.histogram2d(ref[:, 0], ref[:, 1], bins=70, range=[limits, limits])
    ax.imshow(np.sqrt(hist.T), origin="lower", extent=(*limits, *limits), cmap="Greys", alpha=0.45,
              interpolation="bilinear", aspect="auto", zorder=0)


def square(ax, limits: tuple[float, float]) -> None:
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def scatter(ax, pts: np.ndarray, limits: tuple[float, float], color: str = "tab:blue") -> None:
    """``pts`` as dots (larger when there are few), on square axes."""
    size = float(np.clip(3000 / max(len(pts), 1), 1.5, 6.0))
    ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.6, lw=0, color=color)
    square(ax, limits)


def images(ax, native: np.ndarray, side: int, vrange: tuple[float, float], count: int = 16) -> None:
    """The first ``count`` images of ``native (n, side*side)`` as a square mosaic."""
    cols = math.isqrt(count - 1) + 1
    ax.imshow(image_tile(native[:count], (side, side), cols), cmap=IMAGE_CMAP, vmin=vrange[0],
              vmax=vrange[1], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _metric_label(name: str, metrics: Mapping[str, float] | None) -> str:
    if not metrics or f"{name}/w2_ratio" not in metrics:
        return name
    label = f"{name}\nW2 ratio {metrics[f'{name}/w2_ratio']:.2f}"
    if f"{name}/precision" in metrics:
        label += f", P {metrics[f'{name}/precision']:.2f}, R {metrics[f'{name}/recall']:.2f}"
    if f"{name}/accuracy" in metrics:
        label += f", acc {metrics[f'{name}/accuracy']:.2f}"
    return label


# ---- figures ---------------------------------------------------------------------------------
def plot_samples(reference: np.ndarray, panels: Mapping[str, np.ndarray], path: Path,
                 title: str = "", metrics: Mapping[str, float] | None = None) -> Path:
    """Reference points beside each generated set (first two coordinates), same axes, each
    titled with its metrics when given (``metrics["<name>/w2_ratio"]`` ...)."""
    items = [("reference", np.asarray(reference))] + [(k, np.asarray(v)) for k, v in panels.items()]
    limits = lim([finite(a) for _, a in items])
    fig, axes = plt.subplots(1, len(items), figsize=(3.2 * len(items), 3.4), squeeze=False)
    for ax, (name, pts) in zip(axes[0], items):
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.6, lw=0,
                   color="black" if name == "reference" else "tab:blue")
        ax.set_title(_metric_label(name, metrics), fontsize=9)
        square(ax, limits)
    return save(fig, path, title)


def plot_image_samples(reference: np.ndarray, panels: Mapping[str, np.ndarray], path: Path,
                       shape: tuple[int, int], title: str = "",
                       metrics: Mapping[str, float] | None = None, count: int = 36) -> Path:
    """Image datasets: a mosaic of the first ``count`` images per panel (native pixel values)."""
    items = [("reference", np.asarray(reference))] + [(k, np.asarray(v)) for k, v in panels.items()]
    cols = int(np.ceil(np.sqrt(count)))
    vrange = gray_range([items[0][1][:count]])  # the reference sets the gray scale of every panel
    fig, axes = plt.subplots(1, len(items), figsize=(2.8 * len(items), 3.2), squeeze=False)
    for ax, (name, imgs) in zip(axes[0], items):
        ax.imshow(image_tile(imgs[:count], shape, cols), cmap=IMAGE_CMAP, vmin=vrange[0],
                  vmax=vrange[1], interpolation="nearest")
        ax.set_title(_metric_label(name, metrics), fontsize=9)
        ax.axis("off")
    return save(fig, path, title)


def plot_loss(history: Sequence[Mapping[str, float]], path: Path, title: str = "") -> Path:
    """Training curves against step: each loss term ``loss_<name>`` (solid) beside its unweighted
    error ``err_<name>`` (dashed, same colour; drawn where it differs from the term, i.e. with
    adaptive weighting ``p > 0``), and the total ``loss`` (black) where it differs from the ``u``
    term (an auxiliary head's term added)."""
    steps = [h["step"] for h in history]
    series = {k: [h.get(k, math.nan) for h in history] for k in (history[0] if history else {})}
    names = [k.removeprefix("loss_") for k in series if k.startswith("loss_")]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        ax.plot(steps, series[f"loss_{name}"], color=colors(i), lw=1.4, label=f"loss_{name} (weighted)")
        err = series.get(f"err_{name}")
        if err is not None and not np.allclose(err, series[f"loss_{name}"], rtol=1e-6, equal_nan=True):
            ax.plot(steps, err, color=colors(i), lw=1.2, ls="--", label=f"err_{name} = |delta|^2")
    if "loss" in series and (len(names) != 1 or not np.allclose(series["loss"], series[f"loss_{names[0]}"],
                                                                 rtol=1e-6, equal_nan=True)):
        ax.plot(steps, series["loss"], color="black", lw=1.0, label="loss (total)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss / error (batch means)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    if names:
        ax.legend(fontsize=8)
    return save(fig, path, title)


def plot_fields(points: np.ndarray, fields: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
                reference: np.ndarray, bound: float, path: Path, title: str = "") -> Path:
    """Quiver plots of vector fields on the lattice ``points (m, 2)``: one column per entry of
    ``fields`` = ``(top label, bottom label, top field, bottom field)``, each ``(m, 2)``. Arrows
    show the negated field (the direction a sample moves), all on one length scale, over the
    faint reference density on ``[-bound, bound]^2``."""
    limits = (-bound, bound)
    grid = math.isqrt(len(points))
    longest = max(float(np.linalg.norm(f, axis=1).max()) for _, _, *pair in fields for f in pair)
    scale = max(longest, 1e-12) / (1.4 * (2 * bound / max(grid - 1, 1)))  # data per plot unit
    fig, axes = plt.subplots(2, len(fields), figsize=(PANEL * len(fields), 2 * PANEL + 0.5),
                             squeeze=False, layout="constrained")
    for col, (top, bottom, u, v) in enumerate(fields):
        for row, (field, label) in enumerate([(u, top), (v, bottom)]):
            ax = axes[row, col]
            density(ax, reference, limits)
            ax.quiver(points[:, 0], points[:, 1], -field[:, 0], -field[:, 1], angles="xy",
                      scale_units="xy", scale=scale, width=0.004, color="tab:blue", zorder=2)
            ax.set_title(label, fontsize=9)
            square(ax, limits)
    fig.suptitle(f"{title}; longest arrow {longest:.2f}" if title else f"longest arrow {longest:.2f}",
                 fontsize=9)
    return save(fig, path, dpi=100, tight=False)


def plot_transport(start: np.ndarray, end: np.ndarray, reference: np.ndarray, path: Path,
                   title: str = "") -> Path:
    """Thin segments from ``start`` (gray crosses, noise points) to ``end`` (blue dots, their
    samples), over the faint reference density."""
    limits = lim([start, reference, finite(end)])
    fig, ax = plt.subplots(figsize=(5.2, 5.4), layout="constrained")
    density(ax, reference, limits)
    ax.add_collection(LineCollection(np.stack([start, end], 1), colors="tab:blue", linewidths=0.4,
                                     alpha=0.35, zorder=1))
    ax.scatter(start[:, 0], start[:, 1], s=9, marker="x", lw=0.6, color="0.45", zorder=2,
               label="noise z1")
    ax.scatter(end[:, 0], end[:, 1], s=6, lw=0, color="tab:blue", zorder=3, label="sample x")
    square(ax, limits)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7, markerscale=1.5, framealpha=0.7)
    return save(fig, path, dpi=100, tight=False)


def plot_grid(rows: Sequence[Sequence[tuple[str, np.ndarray] | None]], path: Path, title: str = "",
              reference: np.ndarray | None = None, side: int | None = None,
              gray: tuple[float, float] | None = None, cols: int | None = None, font: int = 9) -> Path:
    """Panels of points (or images, with ``side``) on one sheet: ``rows`` of ``(title, array)``
    cells (None: an empty cell); with ``cols`` the panels wrap onto lines of ``cols``. 2-D panels
    share their axes and are drawn over the reference density when ``reference`` is given; image
    panels share the gray scale ``gray`` (default: from the panels' own pixels)."""
    if cols is not None:
        flat = [cell for row in rows for cell in row]
        rows = [flat[i:i + cols] for i in range(0, len(flat), cols)]
    ncols = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(PANEL * ncols, PANEL * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    arrays = [cell[1] for row in rows for cell in row if cell is not None and cell[1] is not None]
    if side:
        gray = gray or gray_range(arrays)
    elif arrays or reference is not None:
        limits = lim([finite(a) for a in arrays] + ([reference] if reference is not None else []))
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell is None:
                continue
            name, a = cell
            ax = axes[r, c]
            ax.axis("on")
            if a is None:  # a panel without data: its title alone
                ax.set_xticks([])
                ax.set_yticks([])
            elif side:
                images(ax, a, side, gray)
            else:
                if reference is not None:
                    density(ax, reference, limits)
                scatter(ax, a, limits, "black" if name == "reference" else "tab:blue")
            ax.set_title(name, fontsize=font)
    fig.suptitle(title, fontsize=10)
    return save(fig, path, dpi=100, tight=False)


def plot_class_grid(samples: Mapping[float, np.ndarray], labels: np.ndarray, path: Path,
                    title: str = "", reference: np.ndarray | None = None, side: int | None = None,
                    per_class: int = 6) -> Path:
    """Class-conditional samples at several ``omega`` (``samples[omega]``, rows in the order of
    ``labels``). Images (``side``): one row per class, ``per_class`` columns per ``omega``. 2-D:
    one panel per ``omega``, each sample coloured by the class asked for (legend), over the
    reference in light gray."""
    omegas = list(samples)
    classes = sorted(set(labels.tolist()))
    if side:
        fig, axes = plt.subplots(1, len(omegas), figsize=(1.1 + 0.45 * per_class * len(omegas),
                                                          0.5 * len(classes) + 0.8), squeeze=False)
        gray = gray_range(list(samples.values()))
        for ax, w in zip(axes[0], omegas):
            ax.imshow(image_tile(samples[w], (side, side), per_class), cmap=IMAGE_CMAP,
                      vmin=gray[0], vmax=gray[1], interpolation="nearest")
            ax.set_title(f"omega = {w:g}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([(side + 1) * i + side / 2 for i in range(len(classes))])
            ax.set_yticklabels([str(c) for c in classes], fontsize=7)
            ax.set_ylabel("class", fontsize=8)
        return save(fig, path, title)
    limits = lim([finite(x) for x in samples.values()] + ([reference] if reference is not None else []))
    fig, axes = plt.subplots(1, len(omegas), figsize=(3.2 * len(omegas), 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, w in zip(axes[0], omegas):
        x = samples[w]
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=1, color="0.8", lw=0)
        for c in classes:
            pts = x[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=2, color=cmap(c % 10), lw=0, label=f"class {c}")
        ax.set_title(f"omega = {w:g}", fontsize=9)
        square(ax, limits)
    axes[0, -1].legend(loc="lower right", fontsize=7, markerscale=4, framealpha=0.7)
    return save(fig, path, title)


def plot_errorbars(labels: Sequence[str], means: Sequence[float], stds: Sequence[float], path: Path,
                   ylabel: str = "", title: str = "") -> Path:
    """One point with an error bar per label (e.g. a metric's mean and std per setting)."""
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(labels) + 1), 3.8))
    if labels:
        x = np.arange(len(labels))
        ax.errorbar(x, means, yerr=stds, fmt="o", capsize=4)
        ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    return save(fig, path)
