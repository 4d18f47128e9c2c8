"""Side-by-side timings of one full training step, in one process.

    python -m imf_exp.bench                      # full benchmark (minutes on a GPU; long on a small CPU)
    python -m imf_exp.bench --quick              # tiny settings: a smoke test (CI)
    python -m imf_exp.bench --time-to-quality    # also train the default run and time it to quality

What is measured
----------------
*Steps per second of a full training step*: draw the data, noise and times; the loss (JVP
included); ``backward``; gradient clipping; the optimizer and LR-schedule step; the EMA update.
Every variant lives in the same process. Each first runs one step on its own (timed: for a
compiled variant this is where ``torch.compile`` traces and compiles, forward and backward), then
``--warmup`` untimed steps. Then come ``--rounds`` interleaved rounds: each round runs
every variant for its number of steps (round-robin, the start rotating each round, so slow
drifts of a shared machine hit every variant alike) and times it with one host sync at the end
of the round. The reported figure is the median over rounds. ``samples/s = steps/s * batch``.

Variants:

* ``baseline``: the design note's step as printed (made runnable): a concat MLP on
  ``[z, sin emb(r), sin emb(t)]`` with max period 10000 on raw ``t``; ``make_moons`` per step,
  standardized by the batch's own statistics; ``r, t`` independent; ``v = u(z, t, t)`` with a
  graph; per-sample ``vmap(jvp)``; ``loss.item()`` every step; plain Adam; a Python EMA loop.
* ``imf_fast``: ``imf_compiled`` with ``trainer.data_pool=64`` (64 batches drawn in one call)
  and ``trainer.fused_update=true`` (clipping, Adam and EMA as one compiled function): the
  opt-in speed settings.
* ``imf_plain_compiled``: ``imf_compiled`` under a plain ``torch.compile``, without the
  zero-matmul pass and the C++ wrapper of ``imf_exp/compile.py`` (what they are worth).
* ``imf_eager``, ``imf_compiled``, ``meanflow``, ``flow_matching_eager``,
  ``flow_matching_compiled``: the step body of :meth:`imf_exp.trainer.Trainer.fit`, written
  out here: the project's models, objectives, data (``Moons`` with its fixed standardization),
  time sampler, optimizer (Adam ``foreach``) and LR schedule, ``foreach`` clipping and
  ``_foreach_lerp_`` EMA; no host sync per step. ``*_compiled`` wraps the loss function (JVP
  included) in ``torch.compile`` with the zero-matmul pass and, on CPU, the C++ wrapper
  (``imf_exp/compile.py``), as ``trainer.compile=on`` does.

Configurations: ``a`` the design note's (concat MLP width 64, depth 3, batch 256) for every
variant; ``b`` the project's default model and ``trainer.batch_size`` (composed from ``conf/``);
``c`` a batch-size sweep of the ``b`` model for iMF (eager, compiled) and flow matching.
``--quick`` shrinks the models and batches and compiles in ``a`` only (each compilation costs
5-20 s on a small CPU).

*Compile time* = the first step's wall time minus the variant's median step time.
The inductor cache is a fresh, empty folder by default (what a first run pays); ``--quick`` uses
the user's cache (``--compile-cache``). A variant whose compilation fails is reported with its
error and left out of the rounds.

*Memory* (per variant, one extra step after the rounds): ``saved_bytes`` is the sum of the
distinct storages autograd saves for backward in one step (through
``torch.autograd.graph.saved_tensors_hooks``; parameters excluded, they are state), the
activation memory a step keeps alive until ``backward``. It counts neither the transients freed
during the forward pass nor the workspace of the kernels, so it is a lower bound of the step's
peak. ``state_bytes`` = parameters + gradients + optimizer state + EMA copy. On CUDA
``cuda_peak_step_bytes`` is ``max_memory_allocated`` during that step minus the memory allocated
before it (all the transients included).

*Time to quality* (``--time-to-quality``): runs ``python -m imf_exp.train`` (the default run:
circles, default model, ``trainer.steps`` steps) in a subprocess with ``trainer.eval_every=200``
into the bench folder, and reports the first eval step whose ``nfe1/w2_ratio`` is under the
threshold (1.3), with two clocks: ``train_seconds``, the sum of the trainer's own timed
log intervals up to that step (``steps / steps_per_s`` of each ``history`` row: training steps
only, evaluations and checkpoints excluded, the first interval's start-up included); and
``wall_seconds``, from the ``run folder:`` line to that eval's ``step N:`` line in ``train.log``
(everything, including the evaluations every 200 steps, which a default run does every 1000).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"

# ---- settings ----------------------------------------------------------------------------------

FULL = dict(rounds=7, warmup=20, steps_per_round=50, batch_sizes=[256, 1024, 4096, 16384],
            threads=None,
            note=dict(width=64, depth=3, embedding_dim=64, batch=256), default_overrides=[],
            compiled_in=("a", "b", "c"))
QUICK = dict(rounds=3, warmup=2, steps_per_round=5, batch_sizes=[64, 256], threads=1,
             note=dict(width=32, depth=2, embedding_dim=16, batch=64),
             default_overrides=["model.width=16", "model.depth=1", "model.embedding_dim=8",
                                "trainer.batch_size=64"],
             compiled_in=("a",))  # each compilation costs 5-20 s on a small CPU
ROUND_REF_BATCH = 1024  # batches above this run steps_per_round * 1024 / batch steps per round
MIN_STEPS_PER_ROUND = 3
TTQ_THRESHOLD = 1.3
TTQ_EVAL_EVERY = 200  # a multiple of trainer.log_every, so every eval step closes a history row


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m imf_exp.bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="tiny models and few steps: a smoke test")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON to write (default: outputs/bench/<timestamp>/bench.json)")
    p.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=None,
                   help="batch sizes of the sweep (c), comma-separated (default 256,1024,4096,16384)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds (default 7)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 20)")
    p.add_argument("--steps-per-round", type=int, default=None,
                   help="steps per variant per round at batch <= 1024 (default 50); larger "
                        "batches run proportionally fewer, at least 3")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled variants")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: 1 with --quick, else torch's choice; "
                        "on a shared CPU, 1 thread avoids OpenMP threads spinning at barriers "
                        "while another process holds the core)")
    p.add_argument("--compile-cache", choices=["fresh", "default"], default=None,
                   help="inductor cache: a fresh empty folder (cold compile; default) or the "
                        "user's (default with --quick)")
    p.add_argument("--time-to-quality", action="store_true",
                   help="also run the default training and time it until nfe1/w2_ratio < 1.3")
    p.add_argument("--ttq-threshold", type=float, default=TTQ_THRESHOLD)
    p.add_argument("--ttq-overrides", nargs="*", default=[],
                   help="extra Hydra overrides for the time-to-quality run (e.g. trainer.steps=400)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("rounds", "warmup", "steps_per_round", "batch_sizes", "threads"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.compile_cache is None:
        args.compile_cache = "default" if args.quick else "fresh"
    if args.rounds < 1 or args.warmup < 0 or args.steps_per_round < 1 or min(args.batch_sizes) < 1:
        p.error("--rounds and --steps-per-round must be >= 1, --warmup >= 0, batch sizes >= 1")
    return args


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- (1) the design note's training step, as printed (made runnable) ---------------------------

def note_embedding(s: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of raw ``s`` in [0, 1]: every frequency is <= 1 rad per unit time."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=s.device) / half)
    angle = s[:, None] * freqs
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)


class NoteMLP(nn.Module):
    """``u(z, r, t)``: an MLP on ``[z, emb(r), emb(t)]``; ``depth`` hidden layers, SiLU."""

    def __init__(self, width: int = 64, depth: int = 3, embedding_dim: int = 64) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        layers, fan_in = [], 2 + 2 * embedding_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.SiLU()]
            fan_in = width
        self.net = nn.Sequential(*layers, nn.Linear(width, 2))

    def forward(self, z, r, t):
        emb = [note_embedding(r, self.embedding_dim), note_embedding(t, self.embedding_dim)]
        return self.net(torch.cat([z, *emb], dim=-1))


def make_note_step(model: NoteMLP, batch: int, device: torch.device) -> Callable[[], torch.Tensor]:
    """One training step of the design note (its defects kept: they are what is measured)."""
    from sklearn.datasets import make_moons
    from torch.func import jvp, vmap

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ema = [p.detach().clone() for p in model.parameters()]
    decay, losses = 0.999, []

    def u_single(z1, r1, t1):
        return model(z1[None], r1[None], t1[None])[0]

    def jvp_single(z1, r1, t1, v1):
        return jvp(u_single, (z1, r1, t1), (v1, torch.zeros_like(r1), torch.ones_like(t1)))

    def step() -> torch.Tensor:
        x = torch.tensor(make_moons(batch, noise=0.05)[0], dtype=torch.float32, device=device)
        x = (x - x.mean(0)) / x.std(0)  # per-batch standardization
        e = torch.randn_like(x)
        r = torch.rand(batch, device=device)  # r and t independent: r > t half the time
        t = torch.rand(batch, device=device)
        z = (1 - t[:, None]) * x + t[:, None] * e
        v = model(z, t, t)  # with a graph
        u, dudt = vmap(jvp_single)(z, r, t, v)  # per-sample JVP
        V = u + (t - r)[:, None] * dudt.detach()
        loss = ((V - (e - x)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())  # a host sync every step
        with torch.no_grad():
            for pe, p in zip(ema, model.parameters(), strict=True):
                pe.mul_(decay).add_(p, alpha=1 - decay)
        return loss.detach()

    step.state = [opt, ema]  # for state_bytes
    return step


# ---- (2-5) the project's training step ---------------------------------------------------------

def own_code(fn: Callable, tag: str) -> Callable:
    """A copy of ``fn`` with its own code object. Dynamo keeps its compiled graphs per code
    object, so without this every variant's closure would share one cache (and its recompile
    limit, and automatic dynamic shapes after the second batch size)."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{re.sub(r'[^0-9a-zA-Z_]', '_', tag)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


FAST_POOL = 64  # imf_fast: trainer.data_pool


def make_project_step(model, objective, parts: dict, batch: int, device: torch.device,
                      compiled: bool, tag: str, fast: bool = False,
                      zero_pass: bool = True) -> Callable[[], torch.Tensor]:
    """The body of :meth:`Trainer.fit`'s loop (minus its logging bookkeeping), no host sync.
    ``fast``: ``trainer.data_pool=64`` and ``trainer.fused_update=true`` as well;
    ``zero_pass=False``: plain ``torch.compile``, without :func:`imf_exp.compile.compile_loss`'s
    pass and options."""
    from imf_exp.compile import compile_loss
    from imf_exp.trainer import BatchStream, backward_step, ema_decay_at

    boundary, dataset, sampler, spec = (parts[k] for k in ("boundary", "dataset", "time_sampler",
                                                           "optimizer"))
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    opt, sched = spec.build(params, parts["total_steps"])
    gen = torch.Generator(device=device).manual_seed(0)
    stream = BatchStream(dataset, sampler, batch, gen, None, FAST_POOL if fast else 0)
    update = spec.updater(opt, params, ema, fused=fast)
    decay, k = parts["ema_decay"], [0]

    def loss_fn(x, e, r, t, cond=None):
        return objective(model, x, e, r, t, boundary)

    if compiled and zero_pass:
        step_loss = compile_loss(own_code(loss_fn, tag), device=device, dynamic=False)
    elif compiled:
        step_loss = torch.compile(own_code(loss_fn, tag), dynamic=False)
    else:
        step_loss = loss_fn

    def step() -> torch.Tensor:  # the trainer's own step functions, in the trainer's order
        loss, _ = backward_step(step_loss, next(stream), update)
        update(ema_decay_at(k[0], decay))
        sched.step()
        k[0] += 1
        return loss.detach()

    step.state = [opt, ema]
    return step


# ---- memory ------------------------------------------------------------------------------------

def tensor_bytes(obj) -> int:
    """Bytes of every tensor in a (nested) optimizer state dict / list."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    if isinstance(obj, torch.optim.Optimizer):
        return tensor_bytes(list(obj.state.values()))
    return 0


def measure_memory(step: Callable, model: nn.Module, device: torch.device) -> dict:
    """``saved_bytes`` of one step (see the module docstring), ``state_bytes`` and, on CUDA, the
    step's peak above what was allocated before it."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict = {}

    def pack(t):
        try:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in param_ptrs:
                saved[ptr] = max(saved.get(ptr, 0), t.untyped_storage().nbytes())
        except RuntimeError:  # no storage: forward-AD zero tangents (hold no memory), wrappers
            if not t._is_zerotensor():
                saved[("id", id(t))] = t.numel() * t.element_size()
        return t

    out = {}
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    if device.type == "cuda":
        sync(device)
        out["cuda_peak_step_bytes"] = torch.cuda.max_memory_allocated(device) - before
    n_param = sum(p.numel() * p.element_size() for p in model.parameters())
    out["saved_bytes"] = int(sum(saved.values()))
    out["state_bytes"] = int(2 * n_param + tensor_bytes(step.state))  # params, grads, opt, EMA
    return out


# ---- variants ----------------------------------------------------------------------------------

@dataclass
class Variant:
    name: str  # "<config>/<variant>[/b<batch>]"
    config: str  # "a", "b" or "c"
    kind: str  # baseline | imf_eager | imf_compiled | meanflow | flow_matching_eager | ..._compiled
    batch: int
    model_desc: str
    build: Callable[[], tuple[Callable, nn.Module]]
    steps_per_round: int
    step: Callable | None = None
    model: nn.Module | None = None
    round_seconds: list = field(default_factory=list)
    round_cpu_seconds: list = field(default_factory=list)  # this process's CPU time per round
    first_step_s: float = float("nan")
    graphs: int = 0
    losses: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def compiled(self) -> bool:
        return self.kind.endswith("_compiled")

    @property
    def steps_per_s(self) -> list[float]:
        return [self.steps_per_round / s for s in self.round_seconds]

    @property
    def median_steps_per_s(self) -> float:
        return statistics.median(self.steps_per_s) if self.round_seconds else float("nan")

    @property
    def compile_s(self) -> float | None:
        if not self.compiled or not self.round_seconds:
            return None
        return max(0.0, self.first_step_s - 1.0 / self.median_steps_per_s)


def prepare(v: Variant, warmup: int, device: torch.device) -> None:
    """Build, run the first step alone (timed; compiles), then ``warmup`` untimed steps."""
    torch.manual_seed(0)
    v.step, v.model = v.build()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    try:
        sync(device)
        t0 = time.perf_counter()
        v.step()
        sync(device)
        v.first_step_s = time.perf_counter() - t0
        for _ in range(warmup):
            v.step()
        sync(device)
    except Exception as err:  # noqa: BLE001 - reported, the benchmark goes on
        v.error, v.step = error_summary(err), None
    v.graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before


def error_summary(err: Exception) -> str:
    """The first line of the error, plus the root cause dynamo wraps as ``got Error('...')``."""
    text = str(err).strip()
    summary = f"{type(err).__name__}: {text.splitlines()[0][:200] if text else ''}"
    cause = re.search(r"got (\w+\(.{0,300})", text, re.S)
    return summary + (f" ({cause.group(1).splitlines()[0]}...)" if cause else "")


def timed_round(v: Variant, device: torch.device) -> None:
    """``steps_per_round`` steps; one host sync at the end (reading the summed loss)."""
    t0, c0 = time.perf_counter(), time.process_time()
    acc = v.step()
    for _ in range(v.steps_per_round - 1):
        acc = acc + v.step()
    mean_loss = acc.item() / v.steps_per_round  # the round's one host sync
    v.round_seconds.append(time.perf_counter() - t0)
    v.round_cpu_seconds.append(time.process_time() - c0)
    v.losses.append(mean_loss)


def run_rounds(variants: list[Variant], rounds: int, device: torch.device) -> None:
    live = [v for v in variants if v.step is not None]
    for i in range(rounds):
        order = live[i % len(live):] + live[:i % len(live)]  # rotate the start each round
        for v in order:
            timed_round(v, device)
        print(f"  round {i + 1}/{rounds}: " + ", ".join(
            f"{v.name} {v.steps_per_s[-1]:.1f}" for v in live), flush=True)


# ---- configurations ----------------------------------------------------------------------------

def compose_default(overrides: list[str]):
    """``conf/train.yaml`` with its defaults, composed as ``python -m imf_exp.train`` would."""
    from hydra import compose, initialize_config_dir

    from imf_exp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def build_variants(args, device: torch.device) -> tuple[list[Variant], dict]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from imf_exp.models import MLP

    preset = QUICK if args.quick else FULL
    overrides = preset["default_overrides"]
    cfg = compose_default(overrides)
    moons_cfg = compose_default(overrides + ["dataset=moons"])
    objectives = {name: instantiate(compose_default(overrides + [f"objective={name}"]).objective)
                  for name in ("imf", "meanflow", "flow_matching")}
    parts = dict(boundary=instantiate(cfg.boundary_mode),  # shared: no auxiliary head
                 dataset=instantiate(moons_cfg.dataset),  # Moons with its fixed standardization
                 time_sampler=instantiate(cfg.time_sampler), optimizer=instantiate(cfg.optimizer),
                 total_steps=int(cfg.trainer.steps), ema_decay=float(cfg.trainer.ema_decay))
    note = preset["note"]
    b_batch = int(cfg.trainer.batch_size)

    def n_steps(batch):
        return max(MIN_STEPS_PER_ROUND, int(args.steps_per_round * min(1.0, ROUND_REF_BATCH / batch)))

    def note_model():
        return MLP(2, width=note["width"], depth=note["depth"], time_input="t,r",
                   embedding_dim=note["embedding_dim"])

    def default_model():
        return instantiate(cfg.model, dim=2, aux_head=False)

    def ours(name, config, kind, make_model, batch, desc):
        fast = kind == "imf_fast"
        base = kind.removesuffix("_eager").removesuffix("_compiled")
        objective = objectives["imf" if base in ("imf_fast", "imf_plain") else base]

        def build():
            model = make_model()
            return make_project_step(model, objective, parts, batch, device,
                                     fast or kind.endswith("_compiled"), name, fast,
                                     zero_pass=base != "imf_plain"), model

        return Variant(name, config, kind, batch, desc, build, n_steps(batch))

    def baseline():
        model = NoteMLP(note["width"], note["depth"], note["embedding_dim"]).to(device)
        return make_note_step(model, note["batch"], device), model

    all_kinds = ["imf_eager", "imf_compiled", "imf_plain_compiled", "imf_fast", "meanflow",
                 "flow_matching_eager", "flow_matching_compiled"]

    def kinds_in(config):
        compiled = not args.no_compile and config in preset["compiled_in"]
        return [k for k in all_kinds
                if compiled or not (k.endswith("_compiled") or k == "imf_fast")]

    desc_a = f"MLP w{note['width']} d{note['depth']} emb{note['embedding_dim']}"
    m = cfg.model
    desc_b = (f"{m._target_.rsplit('.', 1)[-1]} w{m.width} d{m.depth} emb{m.embedding_dim}")
    variants = [Variant("a/baseline", "a", "baseline", note["batch"], "note " + desc_a, baseline,
                        n_steps(note["batch"]))]
    variants += [ours(f"a/{k}", "a", k, note_model, note["batch"], desc_a) for k in kinds_in("a")]
    variants += [ours(f"b/{k}", "b", k, default_model, b_batch, desc_b) for k in kinds_in("b")]
    sweep = []  # (batch, kind, variant name); the batch of (b) is (b)'s own measurement
    for batch in args.batch_sizes:
        for k in ("imf_eager", "imf_compiled", "flow_matching_eager", "flow_matching_compiled"):
            if k not in kinds_in("c") or (batch == b_batch and k not in kinds_in("b")):
                continue
            name = f"b/{k}" if batch == b_batch else f"c/{k}/b{batch}"
            if batch != b_batch:
                variants.append(ours(name, "c", k, default_model, batch, desc_b))
            sweep.append({"batch": batch, "kind": k, "variant": name})
    settings = {
        "a": {"model": desc_a, "time_input": "t,r", "batch": note["batch"], "data": "moons"},
        "b": {"model": OmegaConf.to_container(cfg.model), "batch": b_batch, "data": "moons",
              "overrides": overrides},
        "c": {"model": desc_b, "batch_sizes": args.batch_sizes, "sweep": sweep},
        "objectives": {k: OmegaConf.to_container(compose_default(overrides + [f"objective={k}"])
                                                 .objective) for k in objectives},
        "time_sampler": OmegaConf.to_container(cfg.time_sampler),
        "optimizer": OmegaConf.to_container(cfg.optimizer),
        "default_run_steps": int(cfg.trainer.steps),
        "ema_decay": float(cfg.trainer.ema_decay),
    }
    return variants, settings


# ---- ratios ------------------------------------------------------------------------------------

def compute_ratios(by_name: dict[str, Variant], settings: dict, batch_sizes: list[int]) -> tuple[dict, dict]:
    """Every ratio the benchmark is for; ``None`` (with a note) where a variant is missing."""
    ratios, notes = {}, {}

    def sps(name):
        if name is None:
            raise LookupError("not measured in this run")
        v = by_name.get(name)
        if v is None or v.error or not v.round_seconds:
            raise LookupError(f"{name}: " + (v.error if v is not None and v.error else "not run"))
        return v.median_steps_per_s

    def put(key, fn):
        try:
            ratios[key] = fn()
        except LookupError as err:
            ratios[key], notes[key] = None, str(err)

    put("a: imf_compiled / baseline steps/s", lambda: sps("a/imf_compiled") / sps("a/baseline"))
    put("a: imf_eager / baseline steps/s", lambda: sps("a/imf_eager") / sps("a/baseline"))
    put("a: imf_fast / baseline steps/s", lambda: sps("a/imf_fast") / sps("a/baseline"))
    put("b: imf_fast / imf_compiled steps/s", lambda: sps("b/imf_fast") / sps("b/imf_compiled"))
    for cfg in ("a", "b"):
        put(f"{cfg}: imf_compiled / imf_plain_compiled steps/s (zero-matmul pass, C++ wrapper)",
            lambda c=cfg: sps(f"{c}/imf_compiled") / sps(f"{c}/imf_plain_compiled"))
    for cfg in ("a", "b"):
        for mode in ("eager", "compiled"):
            put(f"{cfg}: imf / flow_matching step cost, {mode}",
                lambda c=cfg, m=mode: sps(f"{c}/flow_matching_{m}") / sps(f"{c}/imf_{m}"))
    put("a: meanflow / imf_eager step cost", lambda: sps("a/imf_eager") / sps("a/meanflow"))
    hi = 4096 if 4096 in batch_sizes else max(batch_sizes)
    lo = 256 if 256 in batch_sizes and 256 < hi else min(batch_sizes)
    name_of = {(s["batch"], s["kind"]): s["variant"] for s in settings["c"]["sweep"]}
    for mode in ("eager", "compiled"):
        def scaling(m=mode):
            a, b = name_of.get((hi, f"imf_{m}")), name_of.get((lo, f"imf_{m}"))
            return sps(a) * hi / (sps(b) * lo)

        put(f"c: imf_{mode} samples/s b{hi} / b{lo}", scaling)

        def fixed_share(m=mode):
            """``T(B) = fixed + B * per_sample`` through both batch sizes: the fixed part's
            share of the small batch's step. The samples/s ratio is ``k / (k - (k - 1) share)``
            with ``k = hi / lo``, so a ratio >= 8 at k = 16 needs a share >= 14/15."""
            a, b = name_of.get((hi, f"imf_{m}")), name_of.get((lo, f"imf_{m}"))
            t_hi, t_lo = 1 / sps(a), 1 / sps(b)
            per_sample = (t_hi - t_lo) / (hi - lo)
            return (t_lo - lo * per_sample) / t_lo

        if hi > lo:
            put(f"c: imf_{mode} fixed-cost share of a b{lo} step (linear fit)", fixed_share)
    n = settings["default_run_steps"]
    for cfg in ("b", "a"):
        def saved(c=cfg):
            return n * (1 / sps(f"{c}/imf_eager") - 1 / sps(f"{c}/imf_compiled"))

        def break_even(c=cfg):
            if saved(c) <= 0:
                raise LookupError("the compiled step is not faster: compilation never pays")
            return compile_s(c) * n / saved(c)

        def compile_s(c=cfg):
            sps(f"{c}/imf_compiled")
            return by_name[f"{c}/imf_compiled"].compile_s

        put(f"{cfg}: imf compile seconds", compile_s)
        put(f"{cfg}: imf seconds saved by compile over {n} steps", saved)
        put(f"{cfg}: imf compile payoff (saved / compile seconds)",
            lambda c=cfg: saved(c) / max(compile_s(c), 1e-9))
        put(f"{cfg}: imf compile break-even steps", break_even)
    return ratios, notes


# ---- time to quality ---------------------------------------------------------------------------

LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[[^\]]*\]\[INFO\] - "
                      r"(run folder:|step (\d+):)")


def time_to_quality(bench_dir: Path, device: torch.device, threshold: float,
                    extra: list[str], threads: int | None = None) -> dict:
    """Train the default run in a subprocess; the time until ``nfe1/w2_ratio < threshold``."""
    run_dir = bench_dir / "time_to_quality"
    cmd = [sys.executable, "-m", "imf_exp.train", f"hydra.run.dir={run_dir}",
           f"trainer.eval_every={TTQ_EVAL_EVERY}", "trainer.progress=false",
           f"device={device.type}", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                   os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print(f"time to quality: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    process_s = time.perf_counter() - t0
    bench_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / "time_to_quality.log").write_text(proc.stdout + proc.stderr)
    out = {"command": cmd[1:], "threshold": threshold, "process_seconds": process_s,
           "returncode": proc.returncode, "run_dir": str(run_dir)}
    if proc.returncode != 0:
        out["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return out
    return {**out, **quality_times(run_dir, threshold)}


def quality_times(run_dir: Path, threshold: float) -> dict:
    """From a finished run folder: the first eval step with ``nfe1/w2_ratio < threshold`` and
    the two clocks up to it (see the module docstring); ``None`` where it never got there."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evals = [(e["step"], e["nfe1/w2_ratio"]) for e in metrics["evals"]]
    hit = next((s for s, w in evals if w < threshold), None)
    out = {"evals": [{"step": s, "nfe1/w2_ratio": w} for s, w in evals], "step": hit,
           "train_seconds": None, "wall_seconds": None}
    if hit is None:
        return out
    prev, train_s = 0, 0.0
    for row in metrics["history"]:  # each row: the steps since the previous row, timed
        if row["step"] > hit:
            break
        train_s += (row["step"] - prev) / row["steps_per_s"]
        prev = row["step"]
    out["train_seconds"] = train_s
    stamps = {}
    for line in (run_dir / "train.log").read_text().splitlines():
        mt = LOG_LINE.match(line)
        if mt:
            when = dt.datetime.strptime(mt.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.setdefault("start" if mt.group(3) is None else int(mt.group(3)), when)
    if "start" in stamps and hit in stamps:
        out["wall_seconds"] = stamps[hit] - stamps["start"]
    return out


# ---- report ------------------------------------------------------------------------------------

def fmt(x, spec=".2f") -> str:
    if x is None:
        return "-"
    return format(x, spec) if math.isfinite(x) else str(x)


def print_table(variants: list[Variant]) -> None:
    head = (f"{'variant':34} {'model':24} {'batch':>6} {'steps/s':>9} {'range':>17} "
            f"{'samples/s':>11} {'ms/step':>8} {'compile s':>9} {'saved KiB':>10} {'state KiB':>10}")
    print(head)
    print("-" * len(head))
    for v in variants:
        if v.error:
            print(f"{v.name:34} {v.model_desc:24} {v.batch:>6} FAILED: {v.error}")
            continue
        s = v.steps_per_s
        med = v.median_steps_per_s
        print(f"{v.name:34} {v.model_desc:24} {v.batch:>6} {med:9.1f} "
              f"{f'{min(s):.1f}..{max(s):.1f}':>17} {med * v.batch:11.0f} {1e3 / med:8.2f} "
              f"{fmt(v.compile_s, '.1f'):>9} {v.memory.get('saved_bytes', 0) / 1024:10.1f} "
              f"{v.memory.get('state_bytes', 0) / 1024:10.1f}")


def print_sweep(by_name: dict[str, Variant], sweep: list[dict]) -> None:
    """Samples/s of the sweep (c): one row per batch size, one column per variant."""
    kinds = list(dict.fromkeys(s["kind"] for s in sweep))
    print(f"\nsweep (c), samples/s\n{'batch':>6} " + " ".join(f"{k:>24}" for k in kinds))
    for batch in sorted({s["batch"] for s in sweep}):
        cells = []
        for k in kinds:
            v = by_name.get(next((s["variant"] for s in sweep
                                  if s["batch"] == batch and s["kind"] == k), ""))
            ok = v is not None and v.round_seconds
            cells.append(f"{v.median_steps_per_s * batch:24.0f}" if ok else f"{'failed':>24}")
        print(f"{batch:>6} " + " ".join(cells))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def variant_json(v: Variant) -> dict:
    med = v.median_steps_per_s
    return {"config": v.config, "kind": v.kind, "model": v.model_desc, "batch": v.batch,
            "parameters": sum(p.numel() for p in v.model.parameters()) if v.model else None,
            "compiled": v.compiled, "error": v.error, "steps_per_round": v.steps_per_round,
            "round_seconds": v.round_seconds, "round_cpu_seconds": v.round_cpu_seconds,
            "round_steps_per_s": v.steps_per_s,
            "median_steps_per_s": med if v.round_seconds else None,
            "median_samples_per_s": med * v.batch if v.round_seconds else None,
            "median_ms_per_step": 1e3 / med if v.round_seconds else None,
            "first_step_s": v.first_step_s if math.isfinite(v.first_step_s) else None,
            "compile_s": v.compile_s, "compiled_graphs": v.graphs if v.compiled else None,
            "round_mean_loss": v.losses, "memory": v.memory}


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out = args.out or ROOT / "outputs" / "bench" / stamp / "bench.json"
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_dir = None
    if args.compile_cache == "fresh":
        cache_dir = tempfile.mkdtemp(prefix="imf_bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"bench: device {device} ({device_name(device)}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; writing {out}", flush=True)

    variants, settings = build_variants(args, device)
    try:
        print(f"preparing {len(variants)} variants (first step, then {args.warmup} warm-up steps)")
        for v in variants:
            prepare(v, args.warmup, device)
            what = (f"FAILED: {v.error}" if v.error else f"first step {v.first_step_s:.2f} s"
                    + (f" ({v.graphs} compiled graph(s))" if v.compiled else ""))
            print(f"  {v.name}: {what}", flush=True)
        print(f"{args.rounds} interleaved rounds (steps/s per variant)")
        run_rounds(variants, args.rounds, device)
        for v in variants:
            if v.step is not None:
                v.memory = measure_memory(v.step, v.model, device)
    finally:
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    by_name = {v.name: v for v in variants}
    ratios, notes = compute_ratios(by_name, settings, args.batch_sizes)
    ttq = None
    if args.time_to_quality:
        ttq = time_to_quality(out.parent, device, args.ttq_threshold, args.ttq_overrides,
                              args.threads)

    result = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "command": [sys.executable, "-m", "imf_exp.bench", *(argv if argv is not None else sys.argv[1:])],
        "environment": {
            "device": str(device), "device_name": device_name(device),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cpu_count": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "compile_cache": args.compile_cache,
        },
        "settings": {"quick": args.quick, "rounds": args.rounds, "warmup": args.warmup,
                     "steps_per_round": args.steps_per_round, "batch_sizes": args.batch_sizes,
                     "compile": not args.no_compile,
                     "compiled_in": [] if args.no_compile else
                     list((QUICK if args.quick else FULL)["compiled_in"]), **settings},
        "measured": {
            "steps_per_s": "median over interleaved rounds of steps / wall seconds of a round; "
                           "a step = data + loss (JVP) + backward + clip + optimizer + EMA",
            "compile_s": "first step's wall seconds minus the median step time",
            "round_cpu_seconds": "this process's CPU seconds per round (all threads); well "
                                 "below threads * round_seconds: the machine was shared",
            "saved_bytes": "distinct storages saved for backward in one step (parameters "
                           "excluded): a lower bound of the step's activation peak",
            "state_bytes": "parameters + gradients + optimizer state + EMA copy",
            "cuda_peak_step_bytes": "CUDA only: max_memory_allocated during a step minus the "
                                    "memory allocated before it",
        },
        "variants": {v.name: variant_json(v) for v in variants},
        "ratios": ratios,
        "ratio_notes": notes,
        "time_to_quality": ttq,
    }
    out.write_text(json.dumps(result, indent=2, allow_nan=True))

    print()
    print_table(variants)
    print_sweep(by_name, settings["c"]["sweep"])
    if ttq is not None:
        print(f"\ntime to quality (nfe1/w2_ratio < {ttq['threshold']}): step {ttq.get('step')}, "
              f"train {fmt(ttq.get('train_seconds'), '.1f')} s, "
              f"wall {fmt(ttq.get('wall_seconds'), '.1f')} s"
              + (f" - FAILED: {ttq['error']}" if "error" in ttq else ""))
    print("\nratios")
    for key, value in ratios.items():
        print(f"  {key:58} {fmt(value, '.3f') if value is not None else 'n/a (' + notes[key] + ')'}")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
