"""Figures of a trained run, drawn from its model and run folder.

    python -m imf_exp.figures RUN_DIR [out=FOLDER]        (default out: RUN_DIR/figures)
                                      [wandb=auto|online|offline]

Every figure is in the dataset's *standardized* coordinates (images of 64-D digits in native
ones). Time runs from data (``t = 0``) to noise (``t = 1``); the network predicts the average
velocity ``u(z, r, t)``, ``r <= t``, and a point jumps ``z_r = z_t - (t - r) u(z_t, r, t)``.

* :func:`plot_fields`: the learned fields ``u(z, r, t)`` over the plane for a few ``(r, t)``,
  above the instantaneous field ``v(z, t)`` at the same ``t``; ``(0, 1)`` is the one-step map.
* :func:`plot_transport`: segments from noise ``z_1`` to its one-step sample
  ``x = z_1 - u(z_1, 0, 1)`` (for a flow-matching run: the endpoint of a 100-step Euler ODE).
* :func:`plot_training_sheet`: the samples saved at each evaluation step, one panel per step.
* :func:`plot_sampler_sheet`: k-NFE average-velocity samples beside Euler ODE samples on ``v``.
* :func:`make_figures`: all that apply to a run folder; :func:`main`: the command line.

``wandb=MODE`` also logs the figures as a W&B run of ``job_type="eval"`` beside the training
run: same project, same group (the sweep's, for a job of a multirun), its folder inside the run
folder's ``wandb/``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from torch import nn  # noqa: E402

from imf_exp.errors import ConfigError, check  # noqa: E402
from imf_exp.plots import _image_tile, _lim, image_side  # noqa: E402
from imf_exp.plots import _save as _save_png  # noqa: E402
from imf_exp.sampling import _full, sample_average, sample_ode  # noqa: E402

DPI = 100
PANEL = 2.6  # inches per panel side
N_REFERENCE = 3000  # dataset points drawn faintly under the 2-D figures
TRANSPORT_ODE_STEPS = 100
SAMPLINGS = ("average", "ode")
STEP_FILE = re.compile(r"^step(\d+)_(.+)\.npz$")
DEFAULTS = {"out": "", "wandb": ""}


# ---- small helpers ---------------------------------------------------------------------------
def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` under ``torch.no_grad()``; the previous train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _need_2d(dataset, what: str) -> None:
    if int(dataset.dim) != 2:
        raise ConfigError(f"{what} draws the plane: it needs a dataset with dim == 2; dataset "
                          f"{dataset.name} has dim={dataset.dim}")


def _check_sampling(sampling: str) -> None:
    check(sampling in SAMPLINGS, "sampling", sampling, f"one of {list(SAMPLINGS)}")


def _check_int(key: str, value: object, low: int) -> None:
    check(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low,
          key, value, f"an int >= {low}")


def _check_ints(key: str, values: Sequence[int], low: int, allow_empty: bool = False) -> None:
    check(isinstance(values, Sequence) and (allow_empty or len(values) > 0), key, values,
          f"a list of ints >= {low}" + ("" if allow_empty else " (at least one)"))
    for v in values:
        _check_int(key, v, low)


def _reference(dataset, n: int, seed: int = 0) -> np.ndarray:
    """``n`` standardized dataset points ``(n, dim)`` drawn with a fixed seed."""
    x, _ = dataset.sample(n, torch.Generator().manual_seed(seed))
    return x.detach().float().cpu().numpy()


def _density(ax, ref: np.ndarray, lim: tuple[float, float]) -> None:
    """The reference density, faintly: a square-root-shaded 2-D histogram over ``lim x lim``."""
    hist, _, _ = np.histogram2d(ref[:, 0], ref[:, 1], bins=70, range=[lim, lim])
    ax.imshow(np.sqrt(hist.T), origin="lower", extent=(*lim, *lim), cmap="Greys", alpha=0.45,
              interpolation="bilinear", aspect="auto", zorder=0)


def _square(ax, lim: tuple[float, float]) -> None:
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _scatter(ax, pts: np.ndarray, lim: tuple[float, float], color: str = "tab:blue") -> None:
    """``pts`` as dots (larger when there are few), on square axes ``lim x lim``."""
    size = float(np.clip(3000 / max(len(pts), 1), 1.5, 6.0))
    ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.6, lw=0, color=color)
    _square(ax, lim)


def _images(ax, native: np.ndarray, side: int, vrange: tuple[float, float]) -> None:
    """The first 16 images of ``native (n, side*side)`` as a 4 x 4 mosaic."""
    ax.imshow(_image_tile(native[:16], (side, side), 4), cmap="gray", vmin=vrange[0], vmax=vrange[1],
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _vrange(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """One gray scale for every image grid of a figure: the 0.5th-99.5th percentile of the pixels
    of ``arrays`` (pass the reference images alone where there are some: samples that overshoot
    the data's range are then clipped instead of dimming the reference)."""
    pixels = np.concatenate([a.ravel() for a in arrays])
    pixels = pixels[np.isfinite(pixels)]
    lo, hi = np.percentile(pixels, [0.5, 99.5]) if len(pixels) else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-6))


def _native(dataset, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Standardized points ``x`` in the dataset's native coordinates (float32 numpy)."""
    x = torch.as_tensor(x).detach().double().cpu()
    return dataset.destandardize(x).float().numpy()


def _save(fig, path: Path) -> Path:
    """:func:`imf_exp.plots._save` at this module's resolution; the figures here bring their own
    (constrained) layout."""
    return _save_png(fig, path, dpi=DPI, tight=False)


# ---- 1. fields -------------------------------------------------------------------------------
def plot_fields(model: nn.Module, dataset, path: Path,
                pairs: Sequence[tuple[float, float]] = ((0.0, 1.0), (0.0, 0.5), (0.5, 1.0), (0.9, 1.0)),
                grid: int = 21) -> Path:
    """Quiver plots of the learned fields over the plane (2-D datasets only).

    Top row, one panel per ``(r, t)``: the average velocity ``u(z, r, t)`` on a ``grid x grid``
    lattice; bottom row: the instantaneous velocity ``v(z, t)`` (``u(z, t, t)`` or the auxiliary
    head) at the same ``t``. Arrows show ``-u`` and ``-v``, the direction a sample moves
    (``z_r = z_t - (t - r) u``, toward the data), all on one common length scale, over the faint
    reference density. ``(r, t) = (0, 1)`` is the one-step map ``x = z_1 - u(z_1, 0, 1)``; the
    MeanFlow identity ``u = v - (t - r) du/dt`` says the two rows agree as ``r -> t``.
    """
    _need_2d(dataset, "plot_fields")
    _check_int("grid", grid, 2)
    pairs = [tuple(map(float, p)) for p in pairs]
    check(len(pairs) > 0 and all(len(p) == 2 and 0.0 <= p[0] <= p[1] <= 1.0 for p in pairs),
          "pairs", pairs, "a non-empty list of (r, t) with 0 <= r <= t <= 1")
    ref = _reference(dataset, N_REFERENCE)
    bound = max(2.5, 1.1 * float(np.abs(np.percentile(ref, [0.5, 99.5], axis=0)).max()))
    lim = (-bound, bound)
    axis = torch.linspace(-bound, bound, grid)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    z = torch.stack([gx.ravel(), gy.ravel()], 1).to(_device(model))
    fields: list[tuple[np.ndarray, np.ndarray]] = []
    with _evaluating(model):
        for r, t in pairs:
            u = model(z, _full(z, r), _full(z, t)).float().cpu().numpy()
            v = model.velocity(z, _full(z, t)).float().cpu().numpy()
            fields.append((u, v))
    z_np = z.cpu().numpy()
    longest = max(float(np.linalg.norm(f, axis=1).max()) for pair in fields for f in pair)
    scale = max(longest, 1e-12) / (1.4 * (2 * bound / (grid - 1)))  # data units per plot unit
    fig, axes = plt.subplots(2, len(pairs), figsize=(PANEL * len(pairs), 2 * PANEL + 0.5),
                             squeeze=False, layout="constrained")
    for col, ((r, t), (u, v)) in enumerate(zip(pairs, fields)):
        for row, (field, label) in enumerate([(u, f"u(z, r={r:g}, t={t:g})"), (v, f"v(z, t={t:g})")]):
            ax = axes[row, col]
            _density(ax, ref, lim)
            ax.quiver(z_np[:, 0], z_np[:, 1], -field[:, 0], -field[:, 1], angles="xy",
                      scale_units="xy", scale=scale, width=0.004, color="tab:blue", zorder=2)
            if row == 0 and (r, t) == (0.0, 1.0):
                label += "\n(one-step map)"
            ax.set_title(label, fontsize=9)
            _square(ax, lim)
    fig.suptitle(f"{dataset.name}: arrows -u (top) and -v (bottom), the sampling direction; "
                 f"longest arrow {longest:.2f}", fontsize=9)
    return _save(fig, path)


# ---- 2. transport ----------------------------------------------------------------------------
def one_step_segments(model: nn.Module, z1: torch.Tensor,
                      sampling: str = "average") -> tuple[np.ndarray, np.ndarray]:
    """``(start, end)`` of the transport segments, both ``(n, dim)`` numpy arrays.

    ``start = z_1``; ``end = z_1 - u(z_1, r=0, t=1)`` for ``sampling="average"`` (the one-step
    map), or the endpoint of ``TRANSPORT_ODE_STEPS`` Euler steps of ``dz/dt = v(z, t)`` from
    ``t = 1`` to ``0`` for ``sampling="ode"`` (flow matching).
    """
    _check_sampling(sampling)
    z1 = z1.to(_device(model))
    with _evaluating(model):
        if sampling == "average":
            end = sample_average(model, z1, 1)
        else:
            end = sample_ode(model.velocity, z1, TRANSPORT_ODE_STEPS, "euler")
    return z1.float().cpu().numpy(), end.float().cpu().numpy()


def plot_transport(model: nn.Module, dataset, path: Path, n: int = 400, seed: int = 0,
                   sampling: str = "average") -> Path:
    """Thin segments from ``n`` noise points ``z_1 ~ N(0, I)`` (seeded) to their samples.

    The sample is ``x = z_1 - u(z_1, 0, 1)`` (one network evaluation), or for
    ``sampling="ode"`` the end of a 100-step Euler ODE on ``v``; see :func:`one_step_segments`.
    Noise points are gray crosses, samples blue dots, over the faint reference density.
    """
    _need_2d(dataset, "plot_transport")
    _check_int("n", n, 1)
    _check_sampling(sampling)
    z1 = torch.randn(n, dataset.dim, generator=torch.Generator().manual_seed(seed))
    start, end = one_step_segments(model, z1, sampling)
    ref = _reference(dataset, N_REFERENCE)
    finite = end[np.isfinite(end).all(1)]
    lim = _lim([start, ref] + ([finite] if len(finite) else []))
    fig, ax = plt.subplots(figsize=(5.2, 5.4), layout="constrained")
    _density(ax, ref, lim)
    ax.add_collection(LineCollection(np.stack([start, end], 1), colors="tab:blue", linewidths=0.4,
                                     alpha=0.35, zorder=1))
    ax.scatter(start[:, 0], start[:, 1], s=9, marker="x", lw=0.6, color="0.45", zorder=2,
               label="noise z1")
    ax.scatter(end[:, 0], end[:, 1], s=6, lw=0, color="tab:blue", zorder=3, label="sample x")
    _square(ax, lim)
    how = ("one-step map x = z1 - u(z1, r=0, t=1)" if sampling == "average"
           else f"flow matching: Euler ODE on v, {TRANSPORT_ODE_STEPS} steps, z1 -> x")
    ax.set_title(f"{dataset.name}: {how}", fontsize=9)
    ax.legend(loc="lower right", fontsize=7, markerscale=1.5, framealpha=0.7)
    return _save(fig, path)


# ---- 3. training sheet -----------------------------------------------------------------------
def eval_step_files(run_dir: Path, sampler: str | None = None) -> list[tuple[int, Path]]:
    """``(step, path)`` of ``RUN_DIR/samples/step{step:07d}_{sampler}.npz``, by increasing step.

    ``sampler`` (e.g. ``"nfe1"`` or ``"ode100"``): which sampler's files; None takes the first
    found (name order; the trainer saves only its first sampler's). Empty when there are none.
    """
    found: dict[str, list[tuple[int, Path]]] = {}
    folder = Path(run_dir) / "samples"
    for path in sorted(folder.glob("step*_*.npz")) if folder.is_dir() else []:
        match = STEP_FILE.match(path.name)
        if match:
            found.setdefault(match.group(2), []).append((int(match.group(1)), path))
    if sampler is None:
        sampler = min(found, default=None)
    return sorted(found.get(sampler, []))


def _evals_of(run_dir: Path) -> list[dict]:
    """``evals`` of ``RUN_DIR/metrics.json``; empty when it is missing or unreadable."""
    try:
        return list(json.loads((Path(run_dir) / "metrics.json").read_text()).get("evals", []))
    except (OSError, ValueError, AttributeError):
        return []


def training_panels(run_dir: Path, evals: Sequence[Mapping] | None = None,
                    max_panels: int = 24) -> list[tuple[int, Path, str]]:
    """``(step, file, title)`` of each panel of the training sheet, by increasing step.

    One panel per evaluation step (at most ``max_panels``, evenly spaced, first and last kept).
    Titles carry the step and ``{sampler}/w2_ratio`` of that step from ``evals`` (default: the
    ``evals`` of ``RUN_DIR/metrics.json``) when it is there.
    """
    _check_int("max_panels", max_panels, 1)
    files = eval_step_files(run_dir)
    if len(files) > max_panels:
        keep = np.unique(np.linspace(0, len(files) - 1, max_panels).round().astype(int))
        files = [files[i] for i in keep]
    evals = _evals_of(run_dir) if evals is None else evals
    by_step = {int(e["step"]): e for e in evals if "step" in e}
    panels = []
    for step, path in files:
        sampler = STEP_FILE.match(path.name).group(2)
        ratio = by_step.get(step, {}).get(f"{sampler}/w2_ratio")
        title = f"step {step}" + (f"\n{sampler} W2 ratio {ratio:.2f}" if ratio is not None else "")
        panels.append((step, path, title))
    return panels


def plot_training_sheet(run_dir: Path, path: Path, evals: Sequence[Mapping] | None = None,
                        dataset=None, max_panels: int = 24) -> Path:
    """The samples saved at each evaluation step, one panel per step (see :func:`training_panels`).

    2-D: scatter plots in standardized coordinates on common axes (over the reference density
    when ``dataset`` is given); ``dim = s * s > 2``: the first 16 samples as ``s x s`` gray images
    (native coordinates, one gray scale for the sheet). Shows how the one-step map forms.
    """
    run_dir = Path(run_dir)
    panels = training_panels(run_dir, evals, max_panels)
    if not panels:
        raise ConfigError(f"{run_dir / 'samples'} has no step*_SAMPLER.npz files: the run has not "
                          "evaluated yet (they are written every trainer.eval_every steps)")
    data = []
    for _, file, _ in panels:
        try:
            with np.load(file) as npz:
                data.append((npz["standardized"], npz["native"]))
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"{file} is not a samples file with arrays 'standardized' and "
                              f"'native' ({err})") from None
    dim = data[0][0].shape[1]
    side = image_side(dim)
    cols = min(len(panels), 6)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL * cols, PANEL * rows + 0.5), squeeze=False,
                             layout="constrained")
    ref = _reference(dataset, N_REFERENCE) if dataset is not None and dataset.dim == dim else None
    if side:
        vrange = _vrange([native for _, native in data] if ref is None
                         else [_native(dataset, ref)])
    else:
        lim = _lim([s[np.isfinite(s).all(1)] for s, _ in data] + ([ref] if ref is not None else []))
    for ax, (_, _, title), (std, native) in zip(axes.flat, panels, data):
        if side:
            _images(ax, native, side, vrange)
        else:
            if ref is not None:
                _density(ax, ref, lim)
            _scatter(ax, std, lim)
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    sampler = STEP_FILE.match(panels[0][1].name).group(2)
    fig.suptitle(f"{run_dir.name}: {sampler} samples during training (EMA weights)", fontsize=10)
    return _save(fig, path)


# ---- 4. sampler sheet ------------------------------------------------------------------------
def plot_sampler_sheet(model: nn.Module, dataset, path: Path, nfe: Sequence[int] = (1, 2, 4, 8),
                       ode_steps: Sequence[int] = (1, 2, 10, 100), n: int = 2000, seed: int = 0,
                       sampling: str = "average") -> Path:
    """k-NFE average-velocity samples beside Euler ODE samples on ``v``, from the same noise.

    Row 1 (not for ``sampling="ode"``): ``t_i = 1 - i/k``,
    ``z_{t_{i+1}} = z_{t_i} - (t_i - t_{i+1}) u(z_{t_i}, t_{i+1}, t_i)`` for each ``k`` in ``nfe``.
    Row 2: ``dz/dt = v(z, t)`` integrated from ``t = 1`` to ``0`` with each of ``ode_steps`` Euler
    steps. First panel: ``n`` reference points. 2-D: scatter plots (standardized); ``dim = s * s``:
    the first 16 samples as ``s x s`` gray images (native coordinates).
    """
    _check_sampling(sampling)
    _check_int("n", n, 1)
    _check_ints("nfe", nfe, 1, allow_empty=sampling == "ode")
    _check_ints("ode_steps", ode_steps, 1)
    z1 = torch.randn(n, dataset.dim, generator=torch.Generator().manual_seed(seed))
    z1 = z1.to(_device(model))
    rows: list[list[tuple[str, torch.Tensor]]] = []
    with _evaluating(model):
        if sampling == "average":
            rows.append([(f"{k} NFE (average velocity)", sample_average(model, z1, int(k)))
                         for k in nfe])
        rows.append([(f"Euler ODE on v, {k} step{'s' * (k != 1)}",
                      sample_ode(model.velocity, z1, int(k), "euler")) for k in ode_steps])
    ref = _reference(dataset, n, seed + 1)
    side = image_side(dataset.dim)

    def shown(x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Standardized points, or native pixels for image datasets."""
        return _native(dataset, x) if side else torch.as_tensor(x).float().cpu().numpy()

    panels = [[(name, shown(x)) for name, x in row] for row in rows]
    reference = shown(ref)
    every = [reference] + [a for row in panels for _, a in row]
    if side:
        vrange = _vrange([reference])
    else:
        lim = _lim([a[np.isfinite(a).all(1)] for a in every])
    cols = 1 + max(len(row) for row in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(PANEL * cols, PANEL * len(panels) + 0.5),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    cells = [(axes[0, 0], "reference", reference, "black")]
    for r, row in enumerate(panels):
        cells += [(axes[r, c + 1], name, a, "tab:blue") for c, (name, a) in enumerate(row)]
    for ax, name, a, color in cells:
        ax.axis("on")
        if side:
            _images(ax, a, side, vrange)
        else:
            _scatter(ax, a, lim, color)
        ax.set_title(name, fontsize=9)
    shown_n = f"the first 16 of {n} samples" if side else f"{n} points"
    fig.suptitle(f"{dataset.name}: samplers from the same noise ({shown_n})", fontsize=10)
    return _save(fig, path)


# ---- 5. all of them --------------------------------------------------------------------------
def make_figures(run_dir: Path, out: Path | None = None, model: nn.Module | None = None,
                 dataset=None, sampling: str | None = None,
                 evals: Sequence[Mapping] | None = None, guidance=None) -> dict[str, Path]:
    """Write every figure that applies to ``run_dir`` into ``out`` (default ``RUN_DIR/figures``).

    ``fields.png`` and ``transport.png`` (2-D datasets), ``training.png`` (when the run saved
    samples at evaluation steps) and ``samplers.png``; returns ``{name: path}`` with the keys
    ``"fields"``, ``"transport"``, ``"training"``, ``"samplers"`` that were written, and for a
    guided run ``"class_grid"`` (class-conditional samples at several ``omega``). The model
    (EMA weights, on the CPU), dataset and sampling kind come from the run folder through
    :func:`imf_exp.sample.load_run` when not given; ``evals`` default to ``metrics.json``'s.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {str(run_dir)!r} does not exist")
    if sampling is not None:
        _check_sampling(sampling)
    if model is None or dataset is None or sampling is None:
        from imf_exp.sample import load_run

        _, parts, loaded, _ = load_run(run_dir, "ema", "cpu")
        model = loaded if model is None else model
        dataset = parts["dataset"] if dataset is None else dataset
        sampling = parts["objective"].sampling if sampling is None else sampling
        guidance = parts["guidance"] if guidance is None else guidance
    out = run_dir / "figures" if out is None else Path(out)
    written: dict[str, Path] = {}
    draw: list[tuple[str, Callable[[Path], Path]]] = []
    if dataset.dim == 2:
        draw.append(("fields", lambda p: plot_fields(model, dataset, p)))
        draw.append(("transport", lambda p: plot_transport(model, dataset, p, sampling=sampling)))
    if eval_step_files(run_dir):
        draw.append(("training", lambda p: plot_training_sheet(run_dir, p, evals, dataset)))
    draw.append(("samplers", lambda p: plot_sampler_sheet(model, dataset, p, sampling=sampling)))
    if guidance is not None and guidance.enabled:
        from imf_exp.plots import plot_class_grid

        omegas = sorted(set(guidance.eval_omega) | {1.0, 2.0, 4.0})
        reference = _reference(dataset, 2000) if dataset.dim == 2 else None
        draw.append(("class_grid", lambda p: plot_class_grid(
            model, dataset, p, omegas, interval=guidance.eval_interval, sampling=sampling,
            reference=reference)))
    for name, fn in draw:
        written[name] = fn(out / f"{name}.png")
    return written


# ---- 6. command line -------------------------------------------------------------------------
def parse_args(argv: list[str]) -> tuple[Path, dict[str, str]]:
    """``RUN_DIR [key=value ...]`` with keys from ``DEFAULTS``."""
    from imf_exp.sample import parse_run_args

    run_dir, args, _ = parse_run_args(argv, DEFAULTS, "usage: python -m imf_exp.figures RUN_DIR "
                                      "[out=FOLDER] (out: where the PNGs go, default RUN_DIR/figures)")
    return run_dir, args


def eval_logger(run_dir: Path, mode: str):
    """A W&B logger for an eval run of ``run_dir``: the training run's project and group."""
    import yaml

    from imf_exp.loggers import WANDB_MODES, WandbLogger

    check(mode in WANDB_MODES, "wandb", mode, f"one of {list(WANDB_MODES)} (or leave it out)")
    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    logger_cfg = cfg.get("logger") or {}
    group = logger_cfg.get("group")
    hydra_cfg = run_dir / ".hydra" / "hydra.yaml"
    if group is None and hydra_cfg.is_file() and "mode: MULTIRUN" in hydra_cfg.read_text():
        sweep = run_dir.resolve().parent  # a job folder SWEEP/N: the training run's own group
        group = f"{sweep.parent.name}_{sweep.name}"
    return WandbLogger(project=logger_cfg.get("project", "imf-exp"), entity=logger_cfg.get("entity"),
                       mode=mode, group=group, job_type="eval", name=f"{run_dir.name}-figures")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        run_dir, args = parse_args(argv)
        logger = eval_logger(run_dir, args["wandb"]) if args["wandb"] and run_dir.is_dir() else None
        written = make_figures(run_dir, Path(args["out"]) if args["out"] else None)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path}")
    if logger is not None:
        logger.start(run_dir, {"run_dir": str(run_dir.resolve()), "figures": sorted(written)})
        logger.log_images(written, 0)
        logger.finish({"figures": len(written)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
