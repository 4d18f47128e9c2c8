"""The structured-config schema: the one place where defaults live.

Every config group option has a dataclass here with its defaults (registered in Hydra's
ConfigStore as ``<group>_<option>_schema``); ``conf/<group>/<option>.yaml`` only names that
schema and documents the option, and ``conf/train.yaml`` only chooses the options. Closed choices are
Enums, so a wrong value, a wrong type or an unknown key fails at composition with Hydra's message
naming the key. Range checks: the objects built from a group check their own arguments in their
constructors (naming the key, e.g. ``optimizer.lr``); :func:`validate` checks the sections no
constructor sees (``trainer``, ``eval`` and the top level).

``dataset=custom`` has no schema: point ``dataset._target_`` at your own sampler and pass its
arguments with ``+dataset.NAME=VALUE``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.nodes import StringNode

from imf_exp.devices import select_device
from imf_exp.errors import ConfigError, check


class Choice(str, Enum):
    """A closed choice: its members' names are what users type."""

    def __str__(self) -> str:
        return self.value


class Activation(Choice):
    silu = "silu"
    gelu = "gelu"
    relu = "relu"
    tanh = "tanh"
    softplus = "softplus"


class Embedding(Choice):
    sinusoidal = "sinusoidal"
    fourier = "fourier"
    raw = "raw"


class OdeMethod(Choice):
    euler = "euler"
    midpoint = "midpoint"


class CompileMode(Choice):
    auto = "auto"  # on CUDA, and for CPU runs of at least 2000 steps
    on = "on"
    off = "off"


class OptimizerName(Choice):
    adam = "adam"
    adamw = "adamw"


class Schedule(Choice):
    constant = "constant"
    cosine = "cosine"
    linear = "linear"


class WandbMode(Choice):
    auto = "auto"  # online when logged in, else offline
    online = "online"
    offline = "offline"
    disabled = "disabled"


class Weights(Choice):
    ema = "ema"
    raw = "raw"


class Coords(Choice):
    native = "native"
    standardized = "standardized"


# ---- train: top level, trainer, eval ---------------------------------------------------------

@dataclass
class TrainerConfig:
    steps: int = 4000
    batch_size: int = 1024
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay_k = min(ema_decay, (1 + k) / (10 + k))
    log_every: int = 100
    eval_every: int = 1000  # 0: evaluate only at the end
    checkpoint_every: int = 1000  # 0: checkpoint only at the end
    compile: CompileMode = CompileMode.auto  # torch.compile of the loss, JVP included
    progress: bool = True  # a progress bar on a terminal
    max_bad_steps: int = 0  # > 0: skip up to this many non-finite steps (a host sync per step)
    data_pool: int = 0  # > 0: draw this many batches at once and hand them out one per step
    fused_update: bool = False  # clipping + Adam/AdamW + EMA as one compiled function
    tf32: bool = False  # CUDA: TF32 matmuls and convolutions (faster, about 1e-3 relative error)
    sync_check: bool = False  # CUDA: a training step that synchronizes the host raises


@dataclass
class EvalConfig:
    n: int = 2000  # generated and reference points
    nfe: list[int] = field(default_factory=lambda: [1, 2, 4])  # average-velocity samplers
    ode_steps: list[int] = field(default_factory=lambda: [100])  # ODE baseline (flow matching)
    ode_method: OdeMethod = OdeMethod.euler
    ode_diagnostic: bool = False  # average-velocity runs: also the ODE on v at ode_steps
    floor_repeats: int = 5  # the W2 floor is the mean over this many reference pairs
    seed: int = 1234
    plot_n: int = 2000  # points per panel of figures/samples.png


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
    threads: int | None = None  # torch CPU threads (None: the CPUs not busy now, devices.cpu_threads)
    resume: str | None = None  # a run folder to continue (its own config is used)


# ---- model -----------------------------------------------------------------------------------

@dataclass
class _ModelBase:
    _target_: str = MISSING
    width: int = 256
    depth: int = 3
    activation: Activation = Activation.silu
    time_input: str = "t,t-r"  # "t,r" | "t,t-r" | "t-r" (checked by the model)
    embedding: Embedding = Embedding.sinusoidal
    embedding_dim: int = 64
    embedding_scale: float = 1.0  # sinusoidal: multiplies t; fourier: std of the frequencies
    max_period: float = 10000.0
    input_fourier: int = 0  # random Fourier features of z (count; 0: off)
    input_fourier_scale: float = 1.0  # std of their frequencies


@dataclass
class MLPConfig(_ModelBase):
    _target_: str = "imf_exp.models.MLP"
    input_fourier: int = 64  # the model classes' own default is 0 (off)


@dataclass
class ResMLPConfig(_ModelBase):
    _target_: str = "imf_exp.models.ResMLP"
    width: int = 128
    expansion: int = 2


# ---- dataset (fixed standardization: per-dimension mean/std of 1e6 native points, seed 0) ----

@dataclass
class _DatasetBase:
    _target_: str = MISSING
    mean: list[float] | None = None  # None: computed once from 1e6 points drawn with seed 0
    std: list[float] | None = None


@dataclass
class MoonsConfig(_DatasetBase):
    _target_: str = "imf_exp.data.Moons"
    noise: float = 0.05
    mean: list[float] | None = field(default_factory=lambda: [0.4975, 0.2514])
    std: list[float] | None = field(default_factory=lambda: [0.8674, 0.4966])


@dataclass
class CirclesConfig(_DatasetBase):
    _target_: str = "imf_exp.data.Circles"
    factor: float = 0.5
    noise: float = 0.05
    mean: list[float] | None = field(default_factory=lambda: [-0.0002, -0.0007])
    std: list[float] | None = field(default_factory=lambda: [0.5613, 0.5617])


@dataclass
class EightGaussiansConfig(_DatasetBase):
    _target_: str = "imf_exp.data.EightGaussians"
    radius: float = 2.0
    component_std: float = 0.2
    mean: list[float] | None = field(default_factory=lambda: [-0.0006, 0.0001])
    std: list[float] | None = field(default_factory=lambda: [1.4289, 1.4275])


@dataclass
class CheckerboardConfig(_DatasetBase):
    _target_: str = "imf_exp.data.Checkerboard"
    squares: int = 4
    size: float = 4.0
    mean: list[float] | None = field(default_factory=lambda: [-0.0005, -0.0020])
    std: list[float] | None = field(default_factory=lambda: [1.1555, 1.1548])


@dataclass
class SwissRollConfig(_DatasetBase):
    _target_: str = "imf_exp.data.SwissRoll"
    noise: float = 0.5
    mean: list[float] | None = field(default_factory=lambda: [2.0074, 0.2055])
    std: list[float] | None = field(default_factory=lambda: [6.6443, 6.9683])


@dataclass
class SpiralsConfig(_DatasetBase):
    _target_: str = "imf_exp.data.Spirals"
    turns: float = 1.5
    noise: float = 0.1
    mean: list[float] | None = field(default_factory=lambda: [-0.0046, 0.0133])
    std: list[float] | None = field(default_factory=lambda: [4.7887, 4.6352])


@dataclass
class DigitsConfig(_DatasetBase):
    _target_: str = "imf_exp.data.Digits"
    holdout: int = 500  # held-out images: the evaluation reference
    jitter: float = 0.0  # uniform dequantization noise (pixel units) on training draws
    split_seed: int = 0
    # mean/std None: the fixed 8 and 8 of every pixel ([0, 16] -> [-1, 1])


# ---- time sampler, boundary mode, optimizer, objective ----------------------------------------

@dataclass
class UniformTimeConfig:
    _target_: str = "imf_exp.time_samplers.UniformTimeSampler"
    p_equal: float = 0.5  # fraction of examples with r = t


@dataclass
class LogitNormalTimeConfig:
    _target_: str = "imf_exp.time_samplers.LogitNormalTimeSampler"
    mu: float = -0.4
    sigma: float = 1.0
    p_equal: float = 0.5


@dataclass
class SharedBoundaryConfig:
    _target_: str = "imf_exp.boundary.BoundaryMode"
    aux_head: bool = False
    aux_weight: float = 0.0  # unused: no auxiliary term


@dataclass
class AuxHeadBoundaryConfig:
    _target_: str = "imf_exp.boundary.BoundaryMode"
    aux_head: bool = True
    aux_weight: float = 1.0  # weight of the auxiliary head's term


@dataclass
class AdamConfig:
    _target_: str = "imf_exp.optim.OptimizerSpec"
    name: OptimizerName = OptimizerName.adam
    lr: float = 2e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0  # adam: L2 penalty in the gradient; adamw: decoupled
    warmup_steps: int = 100  # linear warm-up from 0
    schedule: Schedule = Schedule.cosine  # decay to min_lr_ratio * lr at the last step
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    fused: bool = False  # PyTorch's fused Adam kernel (same math, other rounding)


@dataclass
class AdamWConfig(AdamConfig):
    name: OptimizerName = OptimizerName.adamw
    weight_decay: float = 0.01


@dataclass
class IMFConfig:
    _target_: str = "imf_exp.objectives.IMF"
    norm_p: float = 1.0  # adaptive weighting power p (0: plain squared error)
    norm_eps: float = 0.01  # adaptive weighting constant c


@dataclass
class MeanFlowConfig(IMFConfig):
    _target_: str = "imf_exp.objectives.MeanFlow"


@dataclass
class FlowMatchingConfig(IMFConfig):
    _target_: str = "imf_exp.objectives.FlowMatching"
    norm_p: float = 0.0


# ---- guidance, logger ------------------------------------------------------------------------

@dataclass
class NoGuidanceConfig:
    _target_: str = "imf_exp.objectives.guidance.NoGuidance"


@dataclass
class CFGConfig:
    _target_: str = "imf_exp.objectives.guidance.CFG"
    p_drop: float = 0.1  # probability of the null label in training
    omega_max: float = 4.0  # omega ~ density omega^(-beta) on [1, omega_max]
    beta: float = 1.0  # 1: omega = omega_max ** U(0, 1)
    t_lo_range: list[float] = field(default_factory=lambda: [0.0, 0.5])  # t_lo ~ U(t_lo_range)
    t_hi_range: list[float] = field(default_factory=lambda: [0.5, 1.0])  # t_hi ~ U(t_hi_range)
    eval_omega: list[float] = field(default_factory=lambda: [1.0, 2.0])  # first: primary metric
    eval_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])


@dataclass
class NoLoggerConfig:
    _target_: str = "imf_exp.loggers.NoLogger"


@dataclass
class WandbLoggerConfig:
    _target_: str = "imf_exp.loggers.WandbLogger"
    project: str = "imf-exp"
    entity: str | None = None
    mode: WandbMode = WandbMode.auto
    group: str | None = None  # None: the jobs of a sweep share the sweep folder's name
    tags: list[str] = field(default_factory=list)  # extra tags; each group choice is added
    job_type: str = "train"
    name: str | None = None
    log_images: bool = True


# ---- the other commands ----------------------------------------------------------------------

@dataclass
class SampleConfig:
    run: str = MISSING  # the run folder
    n: int = 5000
    nfe: int = 1  # average-velocity jumps; for a flow-matching run, ODE steps on v
    out: str | None = None  # .npy or .npz; None: RUN/samples/sample_....npz
    seed: int = 0
    weights: Weights = Weights.ema
    coords: Coords = Coords.native  # for .npy outputs
    device: str = "auto"
    ode_method: OdeMethod | None = None  # flow-matching runs only (None: euler)
    # guided runs only (None: not given); also `class` (see sample_schema)
    omega: float | None = None  # >= 1
    interval: list[float] | None = None  # [t_lo, t_hi]


@dataclass
class FiguresConfig:
    run: str = MISSING  # the run folder
    out: str | None = None  # None: RUN/figures
    wandb: WandbMode | None = None  # also log the figures as a W&B eval run


@dataclass
class EvaluateConfig:
    path: str = MISSING  # a run folder, or a sweep folder (each of its completed jobs)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # evaluation draws
    n: int | None = None  # generated and reference points (None: the run's eval.n)
    weights: Weights = Weights.ema
    device: str = "auto"
    name: str | None = None  # RUN/eval/NAME.json (None: n{n}_seeds{first}-{last})


@dataclass
class ReportConfig:
    sweep: str = MISSING  # the sweep folder (outputs/multiruns/DATE/TIME)
    metric: str | None = None  # None: the jobs' primary metric
    columns: list[str] | None = None  # None: the primary sampler's summary metrics
    grid: list[str] | None = None  # ROW,COLUMN (two swept keys): report/grid.png of 2-D samples
    eval: str | None = None  # each job's eval/NAME.json (imf_exp.evaluate) instead of its final metrics


SCHEMAS: dict[tuple[str | None, str], Any] = {
    (None, "train_schema"): TrainConfig,
    (None, "figures_schema"): FiguresConfig,
    (None, "report_schema"): ReportConfig,
    (None, "evaluate_schema"): EvaluateConfig,
    ("model", "mlp"): MLPConfig,
    ("model", "resmlp"): ResMLPConfig,
    ("dataset", "moons"): MoonsConfig,
    ("dataset", "circles"): CirclesConfig,
    ("dataset", "eight_gaussians"): EightGaussiansConfig,
    ("dataset", "checkerboard"): CheckerboardConfig,
    ("dataset", "swissroll"): SwissRollConfig,
    ("dataset", "spirals"): SpiralsConfig,
    ("dataset", "digits"): DigitsConfig,
    ("time_sampler", "uniform"): UniformTimeConfig,
    ("time_sampler", "logit_normal"): LogitNormalTimeConfig,
    ("boundary_mode", "shared"): SharedBoundaryConfig,
    ("boundary_mode", "aux_head"): AuxHeadBoundaryConfig,
    ("optimizer", "adam"): AdamConfig,
    ("optimizer", "adamw"): AdamWConfig,
    ("objective", "imf"): IMFConfig,
    ("objective", "meanflow"): MeanFlowConfig,
    ("objective", "flow_matching"): FlowMatchingConfig,
    ("guidance", "none"): NoGuidanceConfig,
    ("guidance", "cfg"): CFGConfig,
    ("logger", "none"): NoLoggerConfig,
    ("logger", "wandb"): WandbLoggerConfig,
}


def _resume_or(resume: Any, default: str) -> str:
    """``hydra.run.dir``: the folder to resume (checked by ``train.cli`` before Hydra starts)."""
    return str(resume) if resume not in (None, "", "null") else default


@functools.cache
def _output_subdir(output_dir: Any) -> str:
    """A run folder keeps its original ``.hydra/``: a later start in it (``resume=``, a requeued
    job, a fixed ``hydra.run.dir``) writes its own Hydra files beside it. Decided once per
    folder and process (Hydra resolves the value again after it has written the files)."""
    if not (Path(str(output_dir)) / ".hydra" / "config.yaml").exists():
        return ".hydra"
    return ".hydra/resume-" + time.strftime("%Y%m%d-%H%M%S")


def register_configs() -> None:
    """The schemas in Hydra's ConfigStore and the resolvers ``conf/train.yaml`` uses."""
    for name, fn in (("imf.resume_or", _resume_or), ("imf.output_subdir", _output_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    cs = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        if group is None:
            cs.store(name=name, node=node)
        else:  # conf/<group>/<name>.yaml starts from /<group>_<name>_schema (not a group option)
            cs.store(name=f"{group}_{name}_schema", node=node)
    cs.store(name="sample_schema", node=sample_schema())


def sample_schema() -> DictConfig:
    """:class:`SampleConfig` plus ``class`` (a guided run's label ``k``, ``null``, ``mix`` or
    comma-separated class weights; None: not given), a Python keyword no dataclass field can
    be named."""
    node = OmegaConf.structured(SampleConfig)
    with open_dict(node):
        node["class"] = StringNode(None, is_optional=True)
    return node


def default(schema: type, key: str) -> Any:
    """The schema's default of ``key``, as plain Python (a list as a tuple, an Enum as its name).

    Constructor signatures use it (``width: int = default(MLPConfig, "width")``), so the schema
    stays the only place a default is written."""
    spec = {f.name: f for f in dataclasses.fields(schema)}[key]
    has_factory = spec.default_factory is not dataclasses.MISSING
    value = spec.default_factory() if has_factory else spec.default
    if isinstance(value, Enum):
        return value.value
    return tuple(value) if isinstance(value, list) else value


def to_dict(cfg: DictConfig) -> dict:
    """A resolved config as plain Python data (Enums as their names): what run folders,
    checkpoints and loggers store."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


#: generous bounds of sizes that are typos beyond them (a batch of 10^12 points, 10^9 steps)
MAX_BATCH = 1 << 24
MAX_STEPS = 100_000_000
MAX_EVAL_N = 1_000_000
MAX_SEED = (1 << 63) - 1


def non_finite(node: Any, path: str = "") -> tuple[str, float] | None:
    """The first NaN or infinite number in a config (its dotted key and value), else None."""
    if isinstance(node, DictConfig):
        items = ((f"{path}.{k}" if path else str(k), node._get_node(k)) for k in node.keys())
        for key, child in items:
            if isinstance(child, (DictConfig, ListConfig)):
                found = None if child._is_none() or child._is_missing() else non_finite(child, key)
            else:
                value = child._value() if child is not None else None
                found = (key, value) if isinstance(value, float) and not math.isfinite(value) else None
            if found:
                return found
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            if isinstance(item, float) and not math.isfinite(item):
                return f"{path}[{i}]", item
            if isinstance(item, (DictConfig, ListConfig)) and (found := non_finite(item, f"{path}[{i}]")):
                return found
    return None


def validate(cfg: DictConfig) -> None:
    """Every number finite; range checks of the sections that no constructor sees (the objects
    built from the groups check their own). Raises :class:`ConfigError` naming the key."""
    found = non_finite(cfg)
    if found:
        raise ConfigError(f"{found[0]}={found[1]} is not allowed: a finite number")
    tr, ev = cfg.trainer, cfg.eval
    check(1 <= tr.steps <= MAX_STEPS, "trainer.steps", tr.steps, f"an int >= 1 (at most {MAX_STEPS})")
    check(1 <= tr.batch_size <= MAX_BATCH, "trainer.batch_size", tr.batch_size,
          f"an int >= 1 (at most {MAX_BATCH})")
    check(0.0 <= tr.ema_decay < 1.0, "trainer.ema_decay", tr.ema_decay, "a number in [0, 1)")
    check(tr.log_every >= 1, "trainer.log_every", tr.log_every, "an int >= 1")
    check(tr.eval_every >= 0, "trainer.eval_every", tr.eval_every, "an int >= 0 (0: only at the end)")
    check(tr.checkpoint_every >= 0, "trainer.checkpoint_every", tr.checkpoint_every,
          "an int >= 0 (0: only at the end)")
    check(tr.max_bad_steps >= 0, "trainer.max_bad_steps", tr.max_bad_steps, "an int >= 0")
    check(not (tr.sync_check and tr.max_bad_steps), "trainer.sync_check", tr.sync_check,
          "false while trainer.max_bad_steps > 0 (skipping bad steps reads every step's loss)")
    check(0 <= tr.data_pool <= 100_000, "trainer.data_pool", tr.data_pool,
          "an int >= 0 (at most 100000; 0: one draw per step)")
    check(10 <= ev.n <= MAX_EVAL_N, "eval.n", ev.n, f"an int >= 10 (at most {MAX_EVAL_N})")
    check(len(ev.nfe) >= 1 and all(1 <= k <= 10_000 for k in ev.nfe), "eval.nfe", list(ev.nfe),
          "a non-empty list of ints >= 1 (at most 10000)")
    check(len(ev.ode_steps) >= 1 and all(1 <= k <= 100_000 for k in ev.ode_steps), "eval.ode_steps",
          list(ev.ode_steps), "a non-empty list of ints >= 1 (at most 100000)")
    check(1 <= ev.floor_repeats <= 100, "eval.floor_repeats", ev.floor_repeats, "an int >= 1 (at most 100)")
    check(ev.plot_n >= 1, "eval.plot_n", ev.plot_n, "an int >= 1")
    check(0 <= ev.seed <= MAX_SEED, "eval.seed", ev.seed, f"an int in [0, {MAX_SEED}]")
    check(0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, f"an int in [0, {MAX_SEED}]")
    if cfg.threads is not None:
        check(1 <= cfg.threads <= 4096, "threads", cfg.threads, "an int >= 1 or null")
    select_device(cfg.device)  # a malformed name, or a CUDA device this machine lacks
