"""Hydra entry point: compose, validate, build, fit, evaluate; returns the metric to minimize.

    python -m imf_exp.train dataset=circles
    python -m imf_exp.train -m boundary_mode=shared,aux_head seed=0,1,2
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from imf_exp.config import register_configs, validate
from imf_exp.data.base import as_dataset
from imf_exp.errors import ConfigError
from imf_exp.metrics import Evaluator
from imf_exp.trainer import Trainer, write_json

log = logging.getLogger(__name__)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
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


def build(cfg: DictConfig) -> dict:
    """Every object a run needs, built (and so validated) before any work starts."""
    validate(cfg)
    dataset = as_dataset(_build(cfg, "dataset"))
    boundary = _build(cfg, "boundary_mode")
    time_sampler = _build(cfg, "time_sampler")
    objective = _build(cfg, "objective")
    optimizer = _build(cfg, "optimizer")
    logger = _build(cfg, "logger")
    torch.manual_seed(cfg.seed)  # the model's initialization
    model = _build(cfg, "model", dim=dataset.dim, aux_head=boundary.aux_head)
    return dict(dataset=dataset, boundary=boundary, time_sampler=time_sampler,
                objective=objective, optimizer=optimizer, logger=logger, model=model)


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train, evaluate and write every artifact into ``run_dir``; return the primary metric."""
    parts = build(cfg)
    trainer = Trainer(**cfg.trainer, run_dir=run_dir, device=cfg.device, seed=cfg.seed,
                      logger=parts["logger"], config=OmegaConf.to_container(cfg, resolve=True))
    ds = parts["dataset"]
    evaluator = Evaluator(ds, cfg.eval.n, cfg.eval.nfe, cfg.eval.ode_steps, cfg.eval.ode_method,
                          cfg.eval.floor_repeats, cfg.eval.seed, parts["objective"].sampling)
    n_params = sum(p.numel() for p in parts["model"].parameters())
    log.info("run folder: %s", run_dir)
    log.info("device: %s; model: %s with %d parameters; dataset: %s (dim %d)", trainer.device,
             type(parts["model"]).__name__, n_params, ds.name, ds.dim)
    parts["logger"].start(run_dir, OmegaConf.to_container(cfg, resolve=True))
    t0 = time.perf_counter()
    result = trainer.fit(parts["model"], parts["objective"], parts["boundary"], ds,
                         parts["time_sampler"], parts["optimizer"], evaluator)
    final = result["final"]
    summary = {
        "status": "completed",
        "primary": result["primary"],
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


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    log.info("composed config:\n%s", OmegaConf.to_yaml(cfg))
    try:
        return train(cfg, run_dir)
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", err)
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
