"""Hydra entry point: compose, validate, build, fit, evaluate; returns the metric to minimize.

    python -m imf_exp.train dataset=circles
    python -m imf_exp.train -m boundary_mode=shared,aux_head seed=0,1,2
    python -m imf_exp.train resume=outputs/runs/2026-11-29/12-00-00-000000
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from imf_exp.config import EvalConfig, TrainerConfig, register_configs, validate
from imf_exp.data.base import as_dataset
from imf_exp.errors import ConfigError
from imf_exp.metrics import Evaluator
from imf_exp.trainer import Interrupted, NonFiniteError, Trainer, load_checkpoint, write_json

log = logging.getLogger(__name__)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# keys a resumed run may change: they do not alter the trajectory of the weights
RESUME_MAY_CHANGE = ("resume", "device", "trainer.progress", "logger", "hydra")
register_configs()


def _build(cfg: DictConfig, key: str, **kwargs):
    """``instantiate(cfg[key])`` with errors that name the key."""
    node = cfg[key]
    try:
        return instantiate(node, **kwargs)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the key named
        cause = err.__cause__ if err.__cause__ is not None else err
        if isinstance(cause, ConfigError):
            raise cause from None
        target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
        raise ConfigError(f"could not build {key} (_target_={target}): {cause}") from err


def complete_saved_config(saved: dict | DictConfig) -> DictConfig:
    """A run folder's saved config, completed with what was added since it was written: the
    defaults of new ``trainer.*`` and ``eval.*`` keys (from their schemas) and ``guidance=none``.
    Used wherever a saved config is rebuilt (``resume=``, ``imf_exp.sample``)."""
    cfg = saved if isinstance(saved, DictConfig) else OmegaConf.create(saved)
    with open_dict(cfg):
        cfg.trainer = OmegaConf.merge(OmegaConf.structured(TrainerConfig), cfg.get("trainer", {}))
        cfg.eval = OmegaConf.merge(OmegaConf.structured(EvalConfig), cfg.get("eval", {}))
        if "guidance" not in cfg:
            cfg.guidance = {"_target_": "imf_exp.objectives.guidance.NoGuidance"}
    return cfg


def build(cfg: DictConfig) -> dict:
    """Every object a run needs, built (and so validated) before any work starts."""
    validate(cfg)
    dataset = as_dataset(_build(cfg, "dataset"))
    boundary = _build(cfg, "boundary_mode")
    time_sampler = _build(cfg, "time_sampler")
    objective = _build(cfg, "objective")
    guidance = _build(cfg, "guidance")
    guidance.check_dataset(dataset.num_classes, dataset.name)
    optimizer = _build(cfg, "optimizer")
    logger = _build(cfg, "logger")
    model_dim = cfg.model.get("dim") if isinstance(cfg.model, DictConfig) else None
    if model_dim is not None and model_dim != dataset.dim:
        raise ConfigError(f"model.dim={model_dim} does not match the dataset's dimension {dataset.dim} "
                          f"({dataset.name}); leave model.dim unset, it is taken from the dataset")
    if model_dim is not None:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg.model["dim"]
    torch.manual_seed(cfg.seed)  # the model's initialization
    model = _build(cfg, "model", dim=dataset.dim, aux_head=boundary.aux_head,
                   num_classes=dataset.num_classes if guidance.enabled else 0)
    return dict(dataset=dataset, boundary=boundary, time_sampler=time_sampler,
                objective=objective, guidance=guidance, optimizer=optimizer, logger=logger,
                model=model)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_diff(a: dict, b: dict, only: list[str] | None = None) -> list[str]:
    """Dotted keys where two resolved configs differ (restricted to prefixes ``only``)."""
    fa, fb = _flatten(a), _flatten(b)
    keys = sorted(set(fa) | set(fb))
    if only is not None:
        keys = [k for k in keys if any(k == p or k.startswith(p + ".") for p in only)]
    keys = [k for k in keys if not any(k == p or k.startswith(p + ".") for p in RESUME_MAY_CHANGE)]
    return [f"{k} ({fa.get(k, '<absent>')!r} in the run, {fb.get(k, '<absent>')!r} now)"
            for k in keys if fa.get(k, "<absent>") != fb.get(k, "<absent>")]


def _override_keys() -> list[str]:
    keys = []
    for item in HydraConfig.get().overrides.task:
        key = item.split("=", 1)[0].lstrip("+~")
        keys.append(key.split("@", 1)[0])
    return keys


def prepare_resume(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, dict | None]:
    """The config to run and the checkpoint to start from (None: from scratch).

    ``resume=FOLDER`` continues that run with its own saved config; command-line overrides
    that would change it are refused. A run folder that already holds a checkpoint (a
    requeued job, a fixed ``hydra.run.dir``) resumes too, if its config is the same.
    """
    if cfg.resume not in (None, ""):
        if not run_dir.is_dir():
            raise ConfigError(f"resume={cfg.resume!r}: the folder does not exist")
        saved_cfg = run_dir / ".hydra" / "config.yaml"
        if not saved_cfg.is_file():
            raise ConfigError(f"resume={cfg.resume!r}: {saved_cfg} is missing; not a run folder")
        state = load_checkpoint(run_dir)
        if state is None:
            raise ConfigError(f"resume={cfg.resume!r}: no checkpoint.pt in the folder yet")
        now = OmegaConf.to_container(cfg, resolve=True)
        diff = config_diff(state["config"], now, only=_override_keys())
        if diff:
            raise ConfigError(f"resume={cfg.resume!r} uses the run's own config; these overrides "
                              f"would change it: {'; '.join(diff)}")
        run_cfg = complete_saved_config(state["config"])
        for key in ("device", "trainer.progress", "resume"):
            OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), force_add=True)
        return run_cfg, state
    state = load_checkpoint(run_dir)
    if state is None:
        return cfg, None
    diff = config_diff(state["config"], OmegaConf.to_container(cfg, resolve=True))
    if diff:
        raise ConfigError(f"the run folder {run_dir} already holds a checkpoint of another config "
                          f"(differs at {'; '.join(diff)}); choose a new folder, or resume={run_dir}")
    return cfg, state


def train(cfg: DictConfig, run_dir: Path, resume_state: dict | None = None) -> float:
    """Train, evaluate and write every artifact into ``run_dir``; return the primary metric."""
    parts = build(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    config = OmegaConf.to_container(cfg, resolve=True)
    trainer = Trainer(**cfg.trainer, run_dir=run_dir, device=cfg.device, seed=cfg.seed,
                      logger=parts["logger"], config=config)
    ds = parts["dataset"]
    evaluator = Evaluator(ds, cfg.eval.n, cfg.eval.nfe, cfg.eval.ode_steps, cfg.eval.ode_method,
                          cfg.eval.floor_repeats, cfg.eval.seed, parts["objective"].sampling,
                          parts["guidance"], cfg.eval.ode_diagnostic)
    n_params = sum(p.numel() for p in parts["model"].parameters())
    log.info("run folder: %s", run_dir)
    log.info("device: %s; model: %s with %d parameters; dataset: %s (dim %d); compiled loss: %s",
             trainer.device, type(parts["model"]).__name__, n_params, ds.name, ds.dim,
             "on" if trainer.compile else "off")
    parts["logger"].start(run_dir, config)
    t0 = time.perf_counter()
    base = {"primary": evaluator.primary, "config": config}
    try:
        result = trainer.fit(parts["model"], parts["objective"], parts["boundary"], ds,
                             parts["time_sampler"], parts["optimizer"], evaluator, resume_state,
                             guidance=parts["guidance"])
    except NonFiniteError as err:
        msg = (f"training diverged: {err}; the last good checkpoint is kept"
               " (trainer.max_bad_steps > 0 skips a bounded number of such steps)")
        write_json(run_dir / "metrics.json", {**base, "status": "failed", "error": msg,
                                              "failed_step": err.step, "terms": err.terms,
                                              "evals": err.evals, "history": err.history})
        parts["logger"].finish({"status": "failed", "error": msg}, failed=True)
        raise RuntimeError(msg) from None
    except Interrupted as err:
        write_json(run_dir / "metrics.json", {**base, "status": "interrupted", "error": str(err),
                                              "step": err.step, "evals": err.evals,
                                              "history": err.history})
        parts["logger"].finish({"status": "interrupted"}, failed=True)
        log.warning("%s: checkpoint written; continue with resume=%s", err, run_dir)
        raise
    final = result["final"]
    summary = {
        "status": "completed",
        **base,
        "primary_value": final[result["primary"]],
        "final": final,
        "evals": result["evals"],
        "train": {"steps": cfg.trainer.steps, "train_seconds": result["train_seconds"],
                  "wall_seconds": time.perf_counter() - t0,
                  "steps_per_s": cfg.trainer.steps / max(result["train_seconds"], 1e-9),
                  "parameters": n_params, "device": str(trainer.device)},
        "history": result["history"],
    }
    write_json(run_dir / "metrics.json", summary)
    parts["logger"].finish({k: summary[k] for k in ("status", "primary", "primary_value", "final")})
    log.info("final: %s", ", ".join(f"{k}={v:.4f}" for k, v in final.items()))
    log.info("wrote %s", run_dir / "metrics.json")
    return float(final[result["primary"]])


def _fail(message: str, code: int) -> None:
    log.error("%s", message)
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        cfg, state = prepare_resume(cfg, run_dir)
        log.info("composed config:\n%s", OmegaConf.to_yaml(cfg))
        return train(cfg, run_dir, state)
    except Interrupted as err:
        signal.raise_signal(err.signum)  # the previous handler (e.g. submitit's requeue) or exit
        raise
    except ConfigError as err:
        if full_error:
            raise
        if multirun:  # one bad job is recorded, the sweep goes on
            write_json(run_dir / "metrics.json", {"status": "failed", "error": str(err)})
            log.error("job failed: %s", err)
            return math.nan
        _fail(str(err), 2)
    except Exception as err:  # noqa: BLE001
        if multirun:
            if not (run_dir / "metrics.json").exists():  # a divergence already wrote its own
                write_json(run_dir / "metrics.json",
                           {"status": "failed", "error": f"{type(err).__name__}: {err}"})
            log.exception("job failed")
            return math.nan
        if full_error or not isinstance(err, (RuntimeError, OSError)):
            raise
        _fail(str(err), 3)
    return math.nan


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written (None when it can)."""
    probe = folder.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def cli() -> None:
    """``python -m imf_exp.train``: checks Hydra cannot report cleanly, before it creates anything:
    a missing ``resume`` folder, an output folder that cannot be written."""
    folders = {"outputs": Path("outputs")}
    for arg in sys.argv[1:]:
        key, _, value = arg.partition("=")
        if key == "resume" and value not in ("", "null"):
            if not Path(value).is_dir():
                print(f"Error: resume={value!r}: the folder does not exist", file=sys.stderr)
                sys.exit(2)
            folders[key] = Path(value)
        elif key in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in value:
            folders[key] = Path(value)
    for key, folder in folders.items():
        why = _unwritable(folder)
        if why:
            print(f"Error: cannot write the run folder {key}={str(folder)!r}: {why}", file=sys.stderr)
            sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
