"""The figures of a run: what each one shows, sampled from the model and read from the run
folder, then drawn by :mod:`imf_exp.plots`. Also a Hydra app (``conf/figures.yaml``)::

    python -m imf_exp.figures RUN_DIR [out=FOLDER] [wandb=auto|online|offline|disabled]

Every 2-D figure is in the dataset's *standardized* coordinates (images of 64-D digits in
native ones). Time runs from data (``t = 0``) to noise (``t = 1``); the network predicts the
average velocity ``u(z, r, t)``, ``r <= t``, and a point jumps ``z_r = z_t - (t - r) u(z_t, r, t)``.

* ``samples.png``: the reference beside the final samples of every sampler, with their metrics;
* ``loss.png``: the training loss terms;
* ``fields.png`` (2-D): the learned fields ``u(z, r, t)`` for a few ``(r, t)`` above ``v(z, t)``;
* ``transport.png`` (2-D): segments from noise ``z_1`` to its one-step sample;
* ``training.png``: the samples saved at each evaluation step, one panel per step;
* ``samplers.png``: k-NFE average-velocity samples beside Euler ODE samples on ``v``;
* ``class_grid.png`` (guided runs): class-conditional samples at several ``omega``.

``wandb=MODE`` also logs them as a W&B run of ``job_type="eval"`` beside the training run:
same project, same group (the sweep's, for a job of a multirun), its files in the run folder's
``wandb/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from imf_exp import plots
from imf_exp.cli import hydra_app
from imf_exp.cli import run as run_app
from imf_exp.condition import Condition
from imf_exp.config import register_configs
from imf_exp.errors import ConfigError, check
from imf_exp.run_dir import STEP_FILE, RunDir, check_writable
from imf_exp.sampling import full_time, generate, sample_average, sample_ode

N_REFERENCE = 3000  # dataset points drawn faintly under the 2-D figures
TRANSPORT_ODE_STEPS = 100
SAMPLINGS = ("average", "ode")
register_configs()


# ---- small helpers ---------------------------------------------------------------------------
def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without any)."""
    for p in [*model.parameters(), *model.buffers()]:
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


def _native(dataset, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Standardized points ``x`` in the dataset's native coordinates (float32 numpy)."""
    x = torch.as_tensor(x).detach().double().cpu()
    return dataset.destandardize(x).float().numpy()


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
    axis = torch.linspace(-bound, bound, grid)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    z = torch.stack([gx.ravel(), gy.ravel()], 1).to(_device(model))
    fields = []
    with _evaluating(model):
        for r, t in pairs:
            u = model(z, full_time(z, r), full_time(z, t)).float().cpu().numpy()
            v = model.velocity(z, full_time(z, t)).float().cpu().numpy()
            top = f"u(z, r={r:g}, t={t:g})" + ("\n(one-step map)" if (r, t) == (0.0, 1.0) else "")
            fields.append((top, f"v(z, t={t:g})", u, v))
    return plots.plot_fields(z.cpu().numpy(), fields, ref, bound, path,
                             f"{dataset.name}: arrows -u (top) and -v (bottom), the sampling direction")


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
    """
    _need_2d(dataset, "plot_transport")
    _check_int("n", n, 1)
    _check_sampling(sampling)
    z1 = torch.randn(n, dataset.dim, generator=torch.Generator().manual_seed(seed))
    start, end = one_step_segments(model, z1, sampling)
    how = ("one-step map x = z1 - u(z1, r=0, t=1)" if sampling == "average"
           else f"flow matching: Euler ODE on v, {TRANSPORT_ODE_STEPS} steps, z1 -> x")
    return plots.plot_transport(start, end, _reference(dataset, N_REFERENCE), path,
                                f"{dataset.name}: {how}")


# ---- 3. training sheet -----------------------------------------------------------------------
def training_panels(run: RunDir | Path, evals: Sequence[Mapping] | None = None,
                    max_panels: int = 24) -> list[tuple[int, Path, str]]:
    """``(step, file, title)`` of each panel of the training sheet, by increasing step.

    One panel per evaluation step (at most ``max_panels``, evenly spaced, first and last kept).
    Titles carry the step and ``{sampler}/w2_ratio`` of that step from ``evals`` (default: the
    ``evals`` of the run's ``metrics.json``) when it is there.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    _check_int("max_panels", max_panels, 1)
    files = run.eval_step_files()
    if len(files) > max_panels:
        keep = np.unique(np.linspace(0, len(files) - 1, max_panels).round().astype(int))
        files = [files[i] for i in keep]
    if evals is None:
        evals = (run.read_metrics() or {}).get("evals", [])
    by_step = {int(e["step"]): e for e in evals if isinstance(e, Mapping) and "step" in e}
    panels = []
    for step, path in files:
        sampler = STEP_FILE.match(path.name).group(2)
        ratio = by_step.get(step, {}).get(f"{sampler}/w2_ratio")
        title = f"step {step}" + (f"\n{sampler} W2 ratio {ratio:.2f}" if ratio is not None else "")
        panels.append((step, path, title))
    return panels


def plot_training_sheet(run: RunDir | Path, path: Path, evals: Sequence[Mapping] | None = None,
                        dataset=None, max_panels: int = 24) -> Path:
    """The samples saved at each evaluation step, one panel per step (see :func:`training_panels`).

    2-D: scatter plots in standardized coordinates on common axes (over the reference density
    when ``dataset`` is given); ``dim = s * s > 2``: the first 16 samples as ``s x s`` images
    (native coordinates, one gray scale for the sheet). Shows how the one-step map forms.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    panels = training_panels(run, evals, max_panels)
    if not panels:
        raise ConfigError(f"{run.samples} has no step*_SAMPLER.npz files: the run has not "
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
    side = plots.image_side(dim)
    ref = _reference(dataset, N_REFERENCE) if dataset is not None and dataset.dim == dim else None
    sampler = STEP_FILE.match(panels[0][1].name).group(2)
    name = dataset.name if dataset is not None else run.path.name
    title = f"{name}: {sampler} samples during training (EMA weights)"
    cells = [(t, native if side else std) for (_, _, t), (std, native) in zip(panels, data)]
    gray = plots.gray_range([_native(dataset, ref)]) if side and ref is not None else None
    return plots.plot_grid([cells], path, title, reference=None if side else ref, side=side,
                           gray=gray, cols=min(len(cells), 6))


# ---- 4. sampler sheet ------------------------------------------------------------------------
def plot_sampler_sheet(model: nn.Module, dataset, path: Path, nfe: Sequence[int] = (1, 2, 4, 8),
                       ode_steps: Sequence[int] = (1, 2, 10, 100), n: int = 2000, seed: int = 0,
                       sampling: str = "average") -> Path:
    """k-NFE average-velocity samples beside Euler ODE samples on ``v``, from the same noise.

    Row 1 (not for ``sampling="ode"``): ``t_i = 1 - i/k``,
    ``z_{t_{i+1}} = z_{t_i} - (t_i - t_{i+1}) u(z_{t_i}, t_{i+1}, t_i)`` for each ``k`` in ``nfe``.
    Row 2: ``dz/dt = v(z, t)`` integrated from ``t = 1`` to ``0`` with each of ``ode_steps`` Euler
    steps. First panel: ``n`` reference points. 2-D: scatter plots (standardized); ``dim = s * s``:
    the first 16 samples as ``s x s`` images (native coordinates).
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
    side = plots.image_side(dataset.dim)

    def shown(x) -> np.ndarray:
        """Standardized points, or native pixels for image datasets."""
        return _native(dataset, x) if side else torch.as_tensor(x).float().cpu().numpy()

    reference = shown(_reference(dataset, n, seed + 1))
    cells = [[("reference", reference)] + [(name, shown(x)) for name, x in rows[0]]]
    cells += [[None] + [(name, shown(x)) for name, x in row] for row in rows[1:]]
    shown_n = f"the first 16 of {n} samples" if side else f"{n} points"
    return plots.plot_grid(cells, path, f"{dataset.name}: samplers from the same noise ({shown_n})",
                           side=side, gray=plots.gray_range([reference]) if side else None)


# ---- 5. class grid ---------------------------------------------------------------------------
def plot_class_grid(model: nn.Module, dataset, path: Path, omegas: Sequence[float] = (1.0, 2.0, 4.0),
                    per_class: int = 6, nfe: int = 1, interval: Sequence[float] = (0.0, 1.0),
                    sampling: str = "average", seed: int = 0) -> Path:
    """Class-conditional samples of a guided model at several ``omega`` (one NFE by default).

    Images: rows are classes, one block of ``per_class`` columns per ``omega``. 2-D data: one
    panel per ``omega`` (at least 200 samples per class), each sample coloured by the class asked
    for, over the reference in light gray.
    """
    k = dataset.num_classes
    n_each = per_class if dataset.dim > 2 else max(per_class, 200)
    labels = torch.arange(k).repeat_interleave(n_each)
    z1 = torch.randn(len(labels), dataset.dim, generator=torch.Generator().manual_seed(seed))
    z1 = z1.to(_device(model))
    samples = {}
    with _evaluating(model):
        for w in omegas:
            cond = Condition.build(labels, w, interval).to(z1.device)
            x = generate(model, z1, sampling, nfe, cond=cond).float().cpu()
            samples[float(w)] = _native(dataset, x) if dataset.dim > 2 else x.numpy()
    side = plots.image_side(dataset.dim)
    reference = _reference(dataset, 2000) if dataset.dim == 2 else None
    return plots.plot_class_grid(samples, labels.numpy(), path,
                                 f"{dataset.name}: class-conditional samples, {nfe} NFE",
                                 reference=reference, side=side, per_class=per_class)


# ---- 6. samples and loss, from the run folder ---------------------------------------------------
def plot_final_samples(run: RunDir, dataset, path: Path, plot_n: int = 2000) -> Path | None:
    """The reference beside the run's final samples (``samples/<sampler>.npz`` of every sampler
    in ``metrics.json``'s final metrics), each titled with its metrics; None without them."""
    metrics = run.read_metrics() or {}
    final = metrics.get("final") or {}
    names = list(dict.fromkeys(k.split("/")[0] for k in final if "/" in k))
    loaded = {name: run.load_samples(name) for name in names}
    loaded = {k: v for k, v in loaded.items() if v is not None}
    if not loaded:
        return None
    cfg = metrics.get("config") or {}
    n = len(next(iter(loaded.values()))["standardized"])
    seed = int((cfg.get("eval") or {}).get("seed", 1234))
    real, _ = dataset.eval_reference(n, torch.Generator().manual_seed(seed))
    step = (cfg.get("trainer") or {}).get("steps", "?")
    side = plots.image_side(dataset.dim)
    if side:
        return plots.plot_image_samples(
            _native(dataset, real), {k: v["native"] for k, v in loaded.items()}, path, (side, side),
            title=f"{dataset.name}, step {step} (EMA weights)", metrics=final)
    m = min(n, plot_n)
    return plots.plot_samples(real[:m].float().cpu().numpy(),
                              {k: v["standardized"][:m] for k, v in loaded.items()}, path,
                              title=f"{dataset.name}, step {step} (EMA weights, standardized)",
                              metrics=final)


def plot_loss(run: RunDir, path: Path, dataset_name: str = "") -> Path | None:
    """The training loss terms of ``metrics.json``'s history; None without one."""
    history = (run.read_metrics() or {}).get("history") or []
    if not history:
        return None
    return plots.plot_loss(history, path, f"{dataset_name}: training loss" if dataset_name else "")


# ---- 7. all of them --------------------------------------------------------------------------
def make_figures(run: RunDir | Path, out: Path | None = None, model: nn.Module | None = None,
                 dataset=None, sampling: str | None = None, guidance=None,
                 evals: Sequence[Mapping] | None = None, plot_n: int = 2000) -> dict[str, Path]:
    """Write every figure that applies to the run folder into ``out`` (default ``RUN/figures``);
    returns ``{name: path}`` of those written: ``samples`` and ``loss`` (from the run's files),
    ``fields`` and ``transport`` (2-D), ``training`` (when the run saved samples at evaluation
    steps), ``samplers``, and ``class_grid`` for a guided run.

    The model (EMA weights, on the CPU), dataset, sampling kind and guidance come from the run
    folder (:meth:`RunDir.load`) when not given; ``evals`` default to ``metrics.json``'s.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    if not run.path.is_dir():
        raise ConfigError(f"run folder {str(run.path)!r} does not exist")
    if sampling is not None:
        _check_sampling(sampling)
    if model is None or dataset is None or sampling is None:
        loaded = run.load("ema", "cpu")
        model = loaded.model if model is None else model
        dataset = loaded.parts.dataset if dataset is None else dataset
        sampling = loaded.parts.objective.sampling if sampling is None else sampling
        guidance = loaded.parts.guidance if guidance is None else guidance
    out = run.figures if out is None else Path(out)
    draw: list[tuple[str, Callable[[Path], Path | None]]] = [
        ("samples", lambda p: plot_final_samples(run, dataset, p, plot_n)),
        ("loss", lambda p: plot_loss(run, p, dataset.name)),
    ]
    if dataset.dim == 2:
        draw.append(("fields", lambda p: plot_fields(model, dataset, p)))
        draw.append(("transport", lambda p: plot_transport(model, dataset, p, sampling=sampling)))
    if run.eval_step_files():
        draw.append(("training", lambda p: plot_training_sheet(run, p, evals, dataset)))
    draw.append(("samplers", lambda p: plot_sampler_sheet(model, dataset, p, sampling=sampling)))
    if guidance is not None and guidance.enabled:
        omegas = sorted(set(guidance.eval_omega) | {1.0, 2.0, 4.0})
        draw.append(("class_grid", lambda p: plot_class_grid(
            model, dataset, p, omegas, interval=guidance.eval_interval, sampling=sampling)))
    written = {}
    for name, fn in draw:
        path = fn(out / f"{name}.png")
        if path is not None:
            written[name] = path
    return written


# ---- the command line ------------------------------------------------------------------------
def eval_logger(run: RunDir, mode: str):
    """A W&B logger for an eval run of ``run``: the training run's project and group."""
    from imf_exp.loggers import WandbLogger, sweep_group

    saved = run.saved_config()
    logger_cfg = (saved.get("logger") or {}) if saved is not None else {}
    sweep = run.sweep_dir()
    group = logger_cfg.get("group") or (sweep_group(sweep) if sweep is not None else None)
    return WandbLogger(project=logger_cfg.get("project", "imf-exp"), entity=logger_cfg.get("entity"),
                       mode=mode, group=group, job_type="eval", name=f"{run.path.name}-figures")


def figures(cfg: DictConfig) -> dict[str, Path]:
    """Draw every figure of the run folder ``cfg.run`` (into ``cfg.out``); log them to W&B with
    ``cfg.wandb``. Raises :class:`ConfigError` for a bad argument."""
    run = RunDir(cfg.run)
    if not run.path.is_dir():
        raise ConfigError(f"run folder {str(run.path)!r} does not exist")
    check_writable(Path(cfg.out) if cfg.out else run.figures, "out")
    written = make_figures(run, Path(cfg.out) if cfg.out else None)
    for name, path in written.items():
        print(f"{name}: {path}")
    if cfg.wandb is not None:
        logger = eval_logger(run, str(cfg.wandb))
        logger.start(run.path, {"run_dir": str(run.path.resolve()), "figures": sorted(written)})
        logger.log_images(written, 0)
        logger.finish({"figures": len(written)})
    return written


main = hydra_app("figures", figures)


def cli(argv: list[str] | None = None) -> None:
    run_app(main, "figures", argv, positional="run")


if __name__ == "__main__":
    cli()
