"""How a variant is timed: the first step alone, warm-up, interleaved rounds, then memory.

A :class:`Step` is what a variant builds: ``run()`` does one full training step and returns its
loss, detached and on the device (no host sync), so a round can sum the losses and read them
once at its end.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from imf_exp.devices import synchronize


@dataclass
class Step:
    """One variant's training step, ready to time."""

    run: Callable[[], torch.Tensor]  # one full step; its loss (detached, no host sync)
    model: nn.Module  # the trained model: its parameters are state, not saved activations
    state: list  # the optimizer and the EMA tensors (for state_bytes)


@dataclass
class Variant:
    """One timed step and what was measured of it."""

    name: str  # "<config>/<variant>[/b<batch>]"
    config: str  # "a", "b" or "c"
    kind: str  # baseline | imf_eager | imf_compiled | meanflow | flow_matching_eager | ..._compiled
    batch: int
    model_desc: str
    build: Callable[[], Step]
    steps_per_round: int
    step: Step | None = None  # None before prepare, and after an error
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


def measure(variants: list[Variant], rounds: int, warmup: int, device: torch.device) -> None:
    """Everything timed, in order: each variant prepared (first step, warm-up), then the
    interleaved rounds, then one step each under the memory hooks."""
    print(f"preparing {len(variants)} variants (first step, then {warmup} warm-up steps)")
    for v in variants:
        prepare(v, warmup, device)
        what = (f"FAILED: {v.error}" if v.error else f"first step {v.first_step_s:.2f} s"
                + (f" ({v.graphs} compiled graph(s))" if v.compiled else ""))
        print(f"  {v.name}: {what}", flush=True)
    print(f"{rounds} interleaved rounds (steps/s per variant)")
    run_rounds(variants, rounds)
    for v in variants:
        if v.step is not None:
            v.memory = measure_memory(v.step, device)


def prepare(v: Variant, warmup: int, device: torch.device) -> None:
    """Build, run the first step alone (timed; compiles), then ``warmup`` untimed steps."""
    torch.manual_seed(0)
    step = v.build()
    v.step, v.model = step, step.model
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    try:
        synchronize(device)
        t0 = time.perf_counter()
        step.run()
        synchronize(device)
        v.first_step_s = time.perf_counter() - t0
        for _ in range(warmup):
            step.run()
        synchronize(device)
    except Exception as err:  # noqa: BLE001 - reported, the benchmark goes on
        v.error, v.step = error_summary(err), None
    v.graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before


def error_summary(err: Exception) -> str:
    """The first line of the error, plus the root cause dynamo wraps as ``got Error('...')``."""
    text = str(err).strip()
    summary = f"{type(err).__name__}: {text.splitlines()[0][:200] if text else ''}"
    cause = re.search(r"got (\w+\(.{0,300})", text, re.S)
    return summary + (f" ({cause.group(1).splitlines()[0]}...)" if cause else "")


def timed_round(v: Variant) -> None:
    """``steps_per_round`` steps; one host sync at the end (reading the summed loss)."""
    t0, c0 = time.perf_counter(), time.process_time()
    acc = v.step.run()
    for _ in range(v.steps_per_round - 1):
        acc = acc + v.step.run()
    mean_loss = acc.item() / v.steps_per_round  # the round's one host sync
    v.round_seconds.append(time.perf_counter() - t0)
    v.round_cpu_seconds.append(time.process_time() - c0)
    v.losses.append(mean_loss)


def run_rounds(variants: list[Variant], rounds: int) -> None:
    """``rounds`` rounds over the variants that prepared without error, round-robin."""
    live = [v for v in variants if v.step is not None]
    for i in range(rounds):
        order = live[i % len(live):] + live[:i % len(live)]  # rotate the start each round
        for v in order:
            timed_round(v)
        print(f"  round {i + 1}/{rounds}: " + ", ".join(
            f"{v.name} {v.steps_per_s[-1]:.1f}" for v in live), flush=True)


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


def measure_memory(step: Step, device: torch.device) -> dict:
    """``saved_bytes`` of one step (see :mod:`imf_exp.bench`), ``state_bytes`` and, on CUDA, the
    step's peak above what was allocated before it."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in step.model.parameters()}
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
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step.run()
    if device.type == "cuda":
        synchronize(device)
        out["cuda_peak_step_bytes"] = torch.cuda.max_memory_allocated(device) - before
    n_param = sum(p.numel() * p.element_size() for p in step.model.parameters())
    out["saved_bytes"] = int(sum(saved.values()))
    out["state_bytes"] = int(2 * n_param + tensor_bytes(step.state))  # params, grads, opt, EMA
    return out

