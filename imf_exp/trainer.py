"""The training loop: EMA, periodic evaluation, checkpoints, logging.

It knows no dataset and no objective: it draws ``x`` from a dataset object, noise and times from
the time sampler, calls ``objective(model, x, e, r, t, boundary)`` and steps the optimizer.
Per step there is no host-device sync: loss terms are kept on the device and read every
``log_every`` steps.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from imf_exp.boundary import BoundaryMode
from imf_exp.data.base import Dataset
from imf_exp.loggers import Logger, NoLogger
from imf_exp.metrics import Evaluator
from imf_exp.objectives.base import Objective
from imf_exp.optim import OptimizerSpec
from imf_exp.time_samplers import TimeSampler

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=2, allow_nan=True).encode()))


def save_samples(path: Path, standardized: torch.Tensor, dataset: Dataset) -> None:
    """``.npz`` with ``standardized`` and ``native`` coordinates of the same points."""
    std = standardized.detach().float().cpu()
    native = dataset.destandardize(std.double()).float()
    atomic_write_bytes(path, lambda f: np.savez(f, standardized=std.numpy(), native=native.numpy()))


class Trainer:
    """Fits one model; every file it writes lands in ``run_dir``."""

    def __init__(self, steps: int = 4000, batch_size: int = 1024, ema_decay: float = 0.999,
                 ema_warmup: bool = True, log_every: int = 100, eval_every: int = 1000,
                 checkpoint_every: int = 1000, compile: bool = False, progress: bool = True,
                 run_dir: Path | str = ".", device: str = "auto", seed: int = 0,
                 logger: Logger | None = None, config: dict | None = None) -> None:
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.ema_decay, self.ema_warmup = float(ema_decay), bool(ema_warmup)
        self.log_every, self.eval_every = int(log_every), int(eval_every)
        self.checkpoint_every, self.compile, self.progress = int(checkpoint_every), compile, progress
        self.run_dir = Path(run_dir)
        self.device = select_device(device)
        self.seed = int(seed)
        self.logger = logger or NoLogger()
        self.config = config or {}

    # ---- state ---------------------------------------------------------------------------
    def _ema_decay_at(self, step: int) -> float:
        if not self.ema_warmup:
            return self.ema_decay
        return min(self.ema_decay, (1 + step) / (10 + step))

    def _state(self, step, model, ema, opt, sched, gen, history, evals) -> dict:
        return {
            "step": step,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "data": gen.get_state(),
            },
            "history": history,
            "evals": evals,
            "config": self.config,
        }

    def save_checkpoint(self, state: dict) -> Path:
        path = self.run_dir / CHECKPOINT
        atomic_write_bytes(path, lambda f: torch.save(state, f))
        return path

    # ---- the loop --------------------------------------------------------------------------
    def fit(self, model: nn.Module, objective: Objective, boundary: BoundaryMode,
            dataset: Dataset, time_sampler: TimeSampler, optimizer: OptimizerSpec,
            evaluator: Evaluator) -> dict:
        from imf_exp.plots import plot_loss, plot_samples  # matplotlib import is slow

        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        (self.run_dir / "figures").mkdir(exist_ok=True)
        dev = self.device
        model = model.to(dev)
        ema = copy.deepcopy(model).requires_grad_(False).eval()
        params = [p for p in model.parameters() if p.requires_grad]
        ema_params = list(ema.parameters())
        opt, sched = optimizer.build(params, self.steps)
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        history: list[dict] = []
        evals: list[dict] = []
        start = 0
        ckpt_path = self.run_dir / CHECKPOINT
        if ckpt_path.exists():
            state = torch.load(ckpt_path, map_location=dev, weights_only=False)
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            gen.set_state(rng["data"])
            history, evals, start = state["history"], state["evals"], int(state["step"])
            log.info("resumed from %s at step %d", ckpt_path, start)

        def loss_fn(x, e, r, t):
            return objective(model, x, e, r, t, boundary)

        step_loss = torch.compile(loss_fn) if self.compile else loss_fn
        dim, bs = dataset.dim, self.batch_size
        pending: list[dict[str, torch.Tensor]] = []
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=start, desc="train", dynamic_ncols=True,
                       mininterval=0.5, disable=None)  # None: off when not a terminal

        def flush(step: int, elapsed: float, n_steps: int) -> None:
            keys = pending[0].keys()
            stacked = torch.stack([torch.stack([p[k] for p in pending]) for k in keys])
            means = stacked.float().mean(1).tolist()  # the one host sync per log interval
            row = {"step": step, **dict(zip(keys, means)), "lr": sched.get_last_lr()[0],
                   "steps_per_s": n_steps / max(elapsed, 1e-9)}
            history.append(row)
            pending.clear()
            bad = [k for k in keys if not math.isfinite(row[k])]
            if bad:
                raise FloatingPointError(f"non-finite {', '.join(bad)} in steps up to {step}")
            self.logger.log_scalars({f"train/{k}": v for k, v in row.items() if k != "step"}, step)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)

        def evaluate(step: int) -> dict:
            metrics, samples = evaluator(ema)
            evals.append({"step": step, **metrics})
            self.logger.log_scalars({f"eval/{k}": v for k, v in metrics.items()}, step)
            first = evaluator.samplers[0][0]
            log.info("step %d: %s", step, ", ".join(
                f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(first) or k == "w2_floor"))
            save_samples(self.run_dir / "samples" / f"step{step:07d}_{first}.npz", samples[first],
                         dataset)
            return metrics, samples

        t_last, n_last = time.perf_counter(), 0
        train_time = 0.0
        metrics, samples = None, None
        model.train()
        for step in range(start, self.steps):
            x, _ = dataset.sample(bs, gen)
            e = torch.randn(bs, dim, generator=gen, device=dev)
            r, t = time_sampler.sample(bs, gen)
            loss, logs = step_loss(x, e, r, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip = optimizer.grad_clip if optimizer.grad_clip > 0 else float("inf")
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            opt.step()
            sched.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1.0 - self._ema_decay_at(step))
            pending.append(logs)
            done = step + 1
            n_last += 1
            if bar is not None:
                bar.update(1)
            if done % self.log_every == 0 or done == self.steps:
                elapsed = time.perf_counter() - t_last
                train_time += elapsed
                flush(done, elapsed, n_last)
                t_last, n_last = time.perf_counter(), 0
            if (self.eval_every and done % self.eval_every == 0) or done == self.steps:
                if pending:
                    flush(done, time.perf_counter() - t_last, n_last)
                metrics, samples = evaluate(done)
                t_last = time.perf_counter()
            if (self.checkpoint_every and done % self.checkpoint_every == 0) or done == self.steps:
                self.save_checkpoint(self._state(done, model, ema, opt, sched, gen, history, evals))
                t_last = time.perf_counter()
        if bar is not None:
            bar.close()
        if metrics is None:  # resumed from a finished run: evaluate once more
            metrics, samples = evaluator(ema)

        for name, x in samples.items():
            save_samples(self.run_dir / "samples" / f"{name}.npz", x, dataset)
        n_plot = min(len(evaluator.real), 2000)
        fig = plot_samples(evaluator.real[:n_plot].numpy(),
                           {k: v[:n_plot].numpy() for k, v in samples.items()},
                           self.run_dir / "figures" / "samples.png",
                           title=f"{dataset.name}, step {self.steps} (EMA weights, standardized)",
                           metrics=metrics)
        loss_fig = plot_loss(history, self.run_dir / "figures" / "loss.png")
        self.logger.log_images({"samples": fig, "loss": loss_fig}, self.steps)
        return {"final": metrics, "evals": evals, "history": history,
                "train_seconds": train_time, "primary": evaluator.primary,
                "model": model, "ema": ema}
