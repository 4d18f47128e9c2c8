"""Train, sample and evaluate one run (a Hydra app); returns the metric a sweep minimizes.

    python -m imf_exp.train dataset=circles
    python -m imf_exp.train -m boundary_mode=shared,aux_head seed=0,1,2
    python -m imf_exp.train resume=outputs/runs/2026-11-29/12-00-00-000000

Config -> objects (:func:`imf_exp.build.build`) -> :class:`imf_exp.trainer.Trainer` -> the run
folder (:class:`imf_exp.run_dir.RunDir`) -> figures (:mod:`imf_exp.figures`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from imf_exp.build import build
from imf_exp.cli import run as run_app
from imf_exp.config import register_configs, to_dict
from imf_exp.devices import cpu_threads, select_device
from imf_exp.errors import ConfigError
from imf_exp.run_dir import RunDir, RunLocked, check_writable
from imf_exp.scheduler import hand_over, quiet_submitit, stop_signals
from imf_exp.trainer import Interrupted, NonFiniteError, Trainer

log = logging.getLogger(__name__)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
register_configs()


def train(cfg: DictConfig, run: RunDir | Path | str, resume_state: dict | None = None) -> float:
    """Train, evaluate and write every artifact into the run folder; return the primary metric.

    Raises :class:`ConfigError` (bad input, before any work), :class:`NonFiniteError` (after
    writing ``metrics.json`` with ``status: failed``) or :class:`Interrupted` (after the
    checkpoint and ``metrics.json`` with ``status: interrupted``).
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    with run.lock():
        return _train(cfg, run, resume_state)


def _train(cfg: DictConfig, run: RunDir, resume_state: dict | None) -> float:
    t0 = time.perf_counter()
    parts = build(cfg)
    device = select_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg.threads))
    config = to_dict(cfg)
    trainer = Trainer(**cfg.trainer, device=device, seed=cfg.seed, logger=parts.logger, config=config,
                      stop_signals=stop_signals())
    evaluator = parts.evaluator(cfg.eval)
    n_params = sum(p.numel() for p in parts.model.parameters())
    log.info("run folder: %s", run.path)
    log.info("device: %s; model: %s with %d parameters; dataset: %s (dim %d); compiled loss: %s",
             device, type(parts.model).__name__, n_params, parts.dataset.name, parts.dataset.dim,
             "on" if trainer.compile else "off")
    parts.logger.start(run.path, config)
    base = {"primary": evaluator.primary, "config": config}
    try:
        result = trainer.fit(parts, evaluator, run, resume_state)
    except NonFiniteError as err:
        msg = _diverged(err)
        state = trainer.state
        run.write_metrics("failed", **base, error=msg, failed_step=err.step, terms=err.terms,
                          evals=state.evals, history=state.history)
        parts.logger.finish({"status": "failed", "error": msg}, failed=True)
        raise
    except Interrupted as err:
        state = trainer.state
        run.write_metrics("interrupted", **base, error=str(err), step=err.step, evals=state.evals,
                          history=state.history)
        parts.logger.finish({"status": "interrupted"}, failed=True)
        log.warning("%s: checkpoint written; continue with resume=%s", err, run.path)
        raise
    for name, x in result.samples.items():
        run.save_samples(name, x, parts.dataset.destandardize(x.double()))
    final, progress = result.final, result.progress
    train_s = progress.train_seconds
    run.write_metrics(
        "completed", **base, primary_value=final[evaluator.primary], final=final, evals=progress.evals,
        train={"steps": trainer.steps, "train_seconds": train_s,
               "wall_seconds": time.perf_counter() - t0,
               "steps_per_s": trainer.steps / max(train_s, 1e-9), "parameters": n_params,
               "device": str(device), "threads": torch.get_num_threads(), **_peak_memory(device)},
        history=progress.history)
    from imf_exp.figures import make_figures  # matplotlib: imported only once figures are due

    figures = make_figures(run, model=result.ema, dataset=parts.dataset,
                           sampling=parts.objective.sampling, guidance=parts.guidance,
                           plot_n=cfg.eval.plot_n)
    parts.logger.log_images(figures, trainer.steps)
    parts.logger.finish({"status": "completed", "primary": evaluator.primary,
                         "primary_value": final[evaluator.primary], "final": final})
    log.info("final: %s", ", ".join(f"{k}={v:.4f}" for k, v in final.items()))
    log.info("wrote %s", run.path / "metrics.json")
    return float(final[evaluator.primary])


def _diverged(err: NonFiniteError) -> str:
    return (f"training diverged: {err}; the last good checkpoint is kept"
            " (trainer.max_bad_steps > 0 skips a bounded number of such steps)")


def _peak_memory(device: torch.device) -> dict:
    """The peak of CUDA memory allocated by the run's process (CUDA only)."""
    if device.type != "cuda":
        return {}
    return {"cuda_peak_bytes": int(torch.cuda.max_memory_allocated(device))}


def _override_keys() -> list[str]:
    """The keys given on the command line (``+key=``, ``~key`` and ``key@pkg=`` spelled as ``key``)."""
    return [item.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
            for item in HydraConfig.get().overrides.task]


def _fail(message: str, code: int) -> None:
    log.error("%s", message)
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    run = RunDir(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        with run.lock():
            cfg, state = run.prepare(cfg, cfg.resume not in (None, ""), _override_keys())
            overrides = " ".join(hc.overrides.task) or "(none)"
            recipe = hc.runtime.choices.get("recipe")
            log.info("overrides: %s%s; the full config is in %s", overrides,
                     f"; recipe: conf/recipe/{recipe}.yaml" if recipe else "",
                     run.path / hc.output_subdir / "config.yaml")
            log.debug("composed config:\n%s", OmegaConf.to_yaml(cfg))
            return train(cfg, run, state)
    except RunLocked as err:  # another process writes the folder: leave everything to it
        if multirun:
            log.error("job not run: %s", err)
            return math.nan
        _fail(str(err), 2)
    except Interrupted as err:
        hand_over(err.signum)  # the scheduler's requeue, or the signal's own effect
        raise  # a submitit job stopped for good: the sweep records a failed job
    except NonFiniteError as err:
        if multirun:  # metrics.json says failed, with the step and the terms
            log.error("job failed: %s", _diverged(err))
            return math.nan
        _fail(_diverged(err), 3)
    except ConfigError as err:
        if full_error:
            raise
        if multirun:  # one bad job is recorded, the sweep goes on
            run.write_metrics("failed", error=str(err))
            log.error("job failed: %s", err)
            return math.nan
        run.remove_stub(hc.output_subdir)
        _fail(str(err), 2)
    except Exception as err:  # noqa: BLE001
        if multirun:
            if run.read_metrics() is None:  # a divergence already wrote its own
                run.write_metrics("failed", error=f"{type(err).__name__}: {err}")
            log.exception("job failed")
            return math.nan
        if full_error or not isinstance(err, (RuntimeError, OSError)):
            raise
        _fail(str(err), 3)
    return math.nan


def _precheck(argv: list[str]):
    """What :func:`imf_exp.cli.run` checks of each composed config before Hydra starts: the
    objects build (every range check), and a run folder named on the command line (``resume=``
    or ``hydra.run.dir=``) is free and would accept this config."""
    args = [a for a in argv if not a.startswith("-")]
    keys = [a.split("=", 1)[0].lstrip("+~").split("@", 1)[0] for a in args if "=" in a]
    values = dict(a.split("=", 1) for a in args if "=" in a)
    folder = values.get("resume") if values.get("resume") not in (None, "", "null") else (
        values.get("hydra.run.dir") if "${" not in values.get("hydra.run.dir", "${") else None)
    multirun = bool({"-m", "--multirun"} & set(argv))

    def check(cfg: DictConfig) -> None:
        if folder is not None and not multirun and Path(folder).is_dir():
            run = RunDir(folder)
            holder = run.holder()
            if holder:
                raise RunLocked(f"the run folder {run.path} is in use by {holder}; wait for it to "
                                "finish, or choose another folder")
            cfg, _ = run.prepare(cfg, "resume" in keys, keys)
        build(cfg)

    return check


def cli(argv: list[str] | None = None) -> None:
    """``python -m imf_exp.train``: the command line is checked before Hydra creates anything
    (:func:`imf_exp.cli.run`): bad keys and values, every value of a sweep, a missing ``resume``
    folder, a run folder in use or holding another config, an output folder that cannot be
    written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    folders = {"outputs": Path("outputs")}
    try:
        for arg in argv:
            key, _, value = arg.partition("=")
            if key == "resume" and value not in ("", "null"):
                if not Path(value).is_dir():
                    raise ConfigError(f"resume={value!r}: the folder does not exist")
                folders[key] = Path(value)
            elif key in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in value:
                folders[key] = Path(value)
        for key, folder in folders.items():
            check_writable(folder, key)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    quiet_submitit()  # a sweep's driver polls SLURM through submitit
    run_app(main, "train", argv, extra_check=_precheck(argv))


if __name__ == "__main__":
    cli()
