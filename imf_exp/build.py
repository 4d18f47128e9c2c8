"""Config -> objects: everything a run needs, built (and so validated) before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from imf_exp.boundary import BoundaryMode
from imf_exp.config import EvalConfig, TrainerConfig, to_dict, validate
from imf_exp.data.base import Dataset, as_dataset, check_samples
from imf_exp.errors import ConfigError
from imf_exp.loggers import Logger
from imf_exp.metrics import Evaluator
from imf_exp.models.base import AverageVelocityModel
from imf_exp.objectives.base import Objective
from imf_exp.objectives.guidance import Guidance
from imf_exp.optim import OptimizerSpec
from imf_exp.time_samplers import TimeSampler


@dataclass
class Parts:
    """The objects of one run, built from its config by :func:`build`."""

    dataset: Dataset
    boundary: BoundaryMode
    time_sampler: TimeSampler
    objective: Objective
    guidance: Guidance
    optimizer: OptimizerSpec
    logger: Logger
    model: AverageVelocityModel

    def evaluator(self, eval_cfg: DictConfig) -> Evaluator:
        """The run's evaluator (fixed reference sets, floor and noise) from ``cfg.eval``."""
        return Evaluator(self.dataset, eval_cfg.n, eval_cfg.nfe, eval_cfg.ode_steps,
                         str(eval_cfg.ode_method), eval_cfg.floor_repeats, eval_cfg.seed,
                         self.objective.sampling, self.guidance, eval_cfg.ode_diagnostic)


def instantiate_node(cfg: DictConfig, key: str, **kwargs) -> Any:
    """``instantiate(cfg[key])`` from plain data (Enums as their names), with errors that name
    the key."""
    node = cfg[key]
    try:
        plain = OmegaConf.create(to_dict(node)) if isinstance(node, DictConfig) else node
        return instantiate(plain, **kwargs)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the key named
        cause = err.__cause__ if err.__cause__ is not None else err
        if isinstance(cause, ConfigError):
            raise cause from None
        target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(f"could not build {key} (_target_={target}): {reason}") from err


def build(cfg: DictConfig) -> Parts:
    """Every object a run needs, built in a fixed order. The model is initialized right after
    ``torch.manual_seed(cfg.seed)``, so a run folder's config rebuilds its initial weights."""
    validate(cfg)
    dataset = as_dataset(instantiate_node(cfg, "dataset"))
    check_samples(dataset)  # what a (custom) dataset returns, once, before any work
    boundary = instantiate_node(cfg, "boundary_mode")
    time_sampler = instantiate_node(cfg, "time_sampler")
    objective = instantiate_node(cfg, "objective")
    guidance = instantiate_node(cfg, "guidance")
    guidance.check_dataset(dataset.num_classes, dataset.name)
    optimizer = instantiate_node(cfg, "optimizer")
    logger = instantiate_node(cfg, "logger")
    model_dim = cfg.model.get("dim") if isinstance(cfg.model, DictConfig) else None
    if model_dim is not None and model_dim != dataset.dim:
        raise ConfigError(f"model.dim={model_dim} does not match the dataset's dimension {dataset.dim} "
                          f"({dataset.name}); leave model.dim unset, it is taken from the dataset")
    if model_dim is not None:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg.model["dim"]
    torch.manual_seed(cfg.seed)  # the model's initialization
    model = instantiate_node(cfg, "model", dim=dataset.dim, aux_head=boundary.aux_head,
                   num_classes=dataset.num_classes if guidance.enabled else 0)
    return Parts(dataset=dataset, boundary=boundary, time_sampler=time_sampler,
                 objective=objective, guidance=guidance, optimizer=optimizer, logger=logger,
                 model=model)


def complete_saved_config(saved: dict | DictConfig) -> DictConfig:
    """A run folder's saved config, completed with what was added since it was written: the
    defaults of new ``trainer.*`` and ``eval.*`` keys (from their schemas) and ``guidance=none``.
    Used wherever a saved config is rebuilt (resume, ``sample``, ``figures``)."""
    cfg = saved if isinstance(saved, DictConfig) else OmegaConf.create(saved)
    with open_dict(cfg):
        trainer = cfg.get("trainer", {})
        if str(trainer.get("compile", "auto")).lower() in ("true", "false"):  # older spellings
            trainer.compile = "on" if str(trainer.compile).lower() == "true" else "off"
        cfg.trainer = OmegaConf.merge(OmegaConf.structured(TrainerConfig), trainer)
        cfg.eval = OmegaConf.merge(OmegaConf.structured(EvalConfig), cfg.get("eval", {}))
        if "guidance" not in cfg:
            cfg.guidance = {"_target_": "imf_exp.objectives.guidance.NoGuidance"}
    return cfg
