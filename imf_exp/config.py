"""Structured-config schema: dataclasses registered in Hydra's ConfigStore.

``conf/train.yaml`` starts from ``train_schema`` (typed ``trainer``, ``eval``, ``seed``...), and
every group option file starts from its own schema (e.g. ``conf/model/mlp.yaml`` lists
``mlp_schema`` in its defaults), so a wrong type or an unknown key fails at composition with
Hydra's message naming the key. Range checks live in the constructors (they raise
:class:`imf_exp.errors.ConfigError` naming the key) and in :func:`validate`.

``dataset=custom`` has no schema: point ``dataset._target_`` at your own sampler and pass its
arguments with ``+dataset.NAME=VALUE``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from imf_exp.errors import ConfigError, check


@dataclass
class TrainerConfig:
    steps: int = 4000
    batch_size: int = 1024
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay_k = min(ema_decay, (1 + k) / (10 + k))
    log_every: int = 100
    eval_every: int = 1000  # 0: evaluate only at the end
    checkpoint_every: int = 1000  # 0: checkpoint only at the end
    compile: str = "auto"  # auto | on | off (auto: CUDA, or CPU runs >= 2000 steps)
    progress: bool = True
    max_bad_steps: int = 0  # > 0: skip up to this many non-finite steps (a host sync per step)
    data_pool: int = 0  # > 0: draw this many batches at once and hand them out one per step
    fused_update: bool = False  # clipping + Adam/AdamW + EMA as one compiled function


@dataclass
class EvalConfig:
    n: int = 2000
    nfe: list[int] = field(default_factory=lambda: [1, 2, 4])  # average-velocity samplers
    ode_steps: list[int] = field(default_factory=lambda: [100])  # ODE baseline (flow matching)
    ode_method: str = "euler"
    ode_diagnostic: bool = False  # average-velocity runs: also the ODE on v at ode_steps
    floor_repeats: int = 5  # the W2 floor is the mean over this many reference pairs
    seed: int = 1234
    plot_n: int = 2000


@dataclass
class TrainConfig:
    model: Any = MISSING
    dataset: Any = MISSING
    time_sampler: Any = MISSING
    boundary_mode: Any = MISSING
    optimizer: Any = MISSING
    objective: Any = MISSING
    guidance: Any = MISSING
    logger: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    name: str = "imf"
    threads: int | None = None  # torch CPU threads per job (None: torch's default)
    resume: str | None = None  # a run folder to continue (its own config is used)


# ---- group schemas --------------------------------------------------------------------------

@dataclass
class _ModelBase:
    _target_: str = MISSING
    width: int = 256
    depth: int = 4
    activation: str = "silu"
    time_input: str = "t,t-r"
    embedding: str = "sinusoidal"
    embedding_dim: int = 64
    embedding_scale: float = 1.0
    max_period: float = 10000.0
    input_fourier: int = 0
    input_fourier_scale: float = 1.0


@dataclass
class MLPConfig(_ModelBase):
    _target_: str = "imf_exp.models.MLP"


@dataclass
class ResMLPConfig(_ModelBase):
    _target_: str = "imf_exp.models.ResMLP"
    expansion: int = 2


@dataclass
class _DatasetBase:
    _target_: str = MISSING
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class NoiseDatasetConfig(_DatasetBase):  # moons, swissroll
    noise: float = 0.05


@dataclass
class CirclesConfig(_DatasetBase):
    factor: float = 0.5
    noise: float = 0.05


@dataclass
class EightGaussiansConfig(_DatasetBase):
    radius: float = 2.0
    component_std: float = 0.2


@dataclass
class CheckerboardConfig(_DatasetBase):
    squares: int = 4
    size: float = 4.0


@dataclass
class SpiralsConfig(_DatasetBase):
    turns: float = 1.5
    noise: float = 0.1


@dataclass
class DigitsConfig(_DatasetBase):
    holdout: int = 500
    jitter: float = 0.0
    split_seed: int = 0


@dataclass
class UniformTimeConfig:
    _target_: str = "imf_exp.time_samplers.UniformTimeSampler"
    p_equal: float = 0.5


@dataclass
class LogitNormalTimeConfig:
    _target_: str = "imf_exp.time_samplers.LogitNormalTimeSampler"
    mu: float = -0.4
    sigma: float = 1.0
    p_equal: float = 0.5


@dataclass
class BoundaryModeConfig:
    _target_: str = "imf_exp.boundary.BoundaryMode"
    aux_head: bool = False
    aux_weight: float = 1.0


@dataclass
class OptimizerConfig:
    _target_: str = "imf_exp.optim.OptimizerSpec"
    name: str = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    fused: bool = False  # fused Adam/AdamW kernel instead of foreach


@dataclass
class ObjectiveConfig:
    _target_: str = MISSING
    norm_p: float = 1.0
    norm_eps: float = 0.01


@dataclass
class NoGuidanceConfig:
    _target_: str = "imf_exp.objectives.guidance.NoGuidance"


@dataclass
class CFGConfig:
    _target_: str = "imf_exp.objectives.guidance.CFG"
    p_drop: float = 0.1
    omega_max: float = 4.0
    beta: float = 1.0
    t_lo_range: list[float] = field(default_factory=lambda: [0.0, 0.5])
    t_hi_range: list[float] = field(default_factory=lambda: [0.5, 1.0])
    eval_omega: list[float] = field(default_factory=lambda: [1.0, 2.0])
    eval_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])


@dataclass
class LoggerConfig:
    _target_: str = "imf_exp.loggers.NoLogger"


@dataclass
class WandbLoggerConfig:
    _target_: str = "imf_exp.loggers.WandbLogger"
    project: str = "imf-exp"
    entity: str | None = None
    mode: str = "auto"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    job_type: str = "train"
    name: str | None = None
    log_images: bool = True


SCHEMAS: dict[tuple[str | None, str], Any] = {
    (None, "train_schema"): TrainConfig,
    ("model", "mlp_schema"): MLPConfig,
    ("model", "resmlp_schema"): ResMLPConfig,
    ("dataset", "noise_schema"): NoiseDatasetConfig,
    ("dataset", "circles_schema"): CirclesConfig,
    ("dataset", "eight_gaussians_schema"): EightGaussiansConfig,
    ("dataset", "checkerboard_schema"): CheckerboardConfig,
    ("dataset", "spirals_schema"): SpiralsConfig,
    ("dataset", "digits_schema"): DigitsConfig,
    ("time_sampler", "uniform_schema"): UniformTimeConfig,
    ("time_sampler", "logit_normal_schema"): LogitNormalTimeConfig,
    ("boundary_mode", "boundary_schema"): BoundaryModeConfig,
    ("optimizer", "optimizer_schema"): OptimizerConfig,
    ("objective", "objective_schema"): ObjectiveConfig,
    ("guidance", "none_schema"): NoGuidanceConfig,
    ("guidance", "cfg_schema"): CFGConfig,
    ("logger", "logger_schema"): LoggerConfig,
    ("logger", "wandb_schema"): WandbLoggerConfig,
}


def _resume_or(resume: Any, default: str) -> str:
    """``hydra.run.dir``: the folder to resume (checked by ``train.cli`` before Hydra starts)."""
    return str(resume) if resume not in (None, "", "null") else default


def _output_subdir(resume: Any) -> str:
    """A resumed run keeps its original ``.hydra/``; the resume's own files go beside it."""
    if resume in (None, "", "null"):
        return ".hydra"
    return ".hydra/resume-" + time.strftime("%Y%m%d-%H%M%S")


def register_configs() -> None:
    for name, fn in (("imf.resume_or", _resume_or), ("imf.output_subdir", _output_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    cs = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        cs.store(group=group, name=name, node=node)


def validate(cfg: DictConfig) -> None:
    """Range checks of the sections that no constructor sees. Raises :class:`ConfigError`."""
    tr, ev = cfg.trainer, cfg.eval
    check(tr.steps >= 1, "trainer.steps", tr.steps, "an int >= 1")
    check(tr.batch_size >= 1, "trainer.batch_size", tr.batch_size, "an int >= 1")
    check(0.0 <= tr.ema_decay < 1.0, "trainer.ema_decay", tr.ema_decay, "a number in [0, 1)")
    check(tr.log_every >= 1, "trainer.log_every", tr.log_every, "an int >= 1")
    check(tr.eval_every >= 0, "trainer.eval_every", tr.eval_every, "an int >= 0 (0: only at the end)")
    check(tr.checkpoint_every >= 0, "trainer.checkpoint_every", tr.checkpoint_every,
          "an int >= 0 (0: only at the end)")
    check(ev.n >= 10, "eval.n", ev.n, "an int >= 10")
    check(len(ev.nfe) >= 1 and all(k >= 1 for k in ev.nfe), "eval.nfe", list(ev.nfe),
          "a non-empty list of ints >= 1")
    check(len(ev.ode_steps) >= 1 and all(k >= 1 for k in ev.ode_steps), "eval.ode_steps",
          list(ev.ode_steps), "a non-empty list of ints >= 1")
    check(ev.ode_method in ("euler", "midpoint"), "eval.ode_method", ev.ode_method,
          "one of ['euler', 'midpoint']")
    check(ev.floor_repeats >= 1, "eval.floor_repeats", ev.floor_repeats, "an int >= 1")
    check(ev.plot_n >= 1, "eval.plot_n", ev.plot_n, "an int >= 1")
    check(str(tr.compile).lower() in ("auto", "on", "off", "true", "false"), "trainer.compile",
          tr.compile, "one of 'auto', 'on', 'off'")
    check(tr.max_bad_steps >= 0, "trainer.max_bad_steps", tr.max_bad_steps, "an int >= 0")
    check(tr.data_pool >= 0, "trainer.data_pool", tr.data_pool, "an int >= 0 (0: one draw per step)")
    if cfg.threads is not None:
        check(cfg.threads >= 1, "threads", cfg.threads, "an int >= 1 or null")
    dev = str(cfg.device)
    if not (dev in ("auto", "cpu") or dev == "cuda" or dev.startswith("cuda:")):
        raise ConfigError(f"device={dev!r} is not allowed: one of 'auto', 'cpu', 'cuda', 'cuda:N'")
