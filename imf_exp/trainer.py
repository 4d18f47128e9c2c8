"""The training loop: EMA, periodic evaluation, checkpoints and resume, logging.

It knows no dataset and no objective: it draws ``x`` from a dataset object, noise and times from
the time sampler, calls ``objective(model, x, e, r, t, boundary)`` and steps the optimizer.
Per step there is no host-device sync: loss terms stay on the device and are read every
``log_every`` steps (and before every checkpoint, so a checkpoint never holds non-finite
weights). ``max_bad_steps > 0`` trades that for a per-step check that skips bad steps.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imf_exp.boundary import BoundaryMode
from imf_exp.compile import compile_loss
from imf_exp.data.base import Dataset
from imf_exp.errors import ConfigError
from imf_exp.loggers import Logger, NoLogger
from imf_exp.metrics import Evaluator
from imf_exp.objectives.base import Objective
from imf_exp.optim import EagerUpdate, FusedUpdate, OptimizerSpec
from imf_exp.time_samplers import TimeSampler

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
STATE_KEYS = ("step", "model", "ema", "optimizer", "scheduler", "rng", "history", "evals", "config")
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


class NonFiniteError(RuntimeError):
    """A loss term or the gradient norm became NaN or infinite."""

    def __init__(self, step: int, terms: list[str], history, evals) -> None:
        super().__init__(f"non-finite {', '.join(terms)} at step {step}")
        self.step, self.terms, self.history, self.evals = step, terms, history, evals


class Interrupted(RuntimeError):
    """SIGTERM or SIGUSR1 arrived; a checkpoint was written at ``step``."""

    def __init__(self, signum: int, step: int, history, evals) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.history, self.evals = signum, step, history, evals


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is not allowed here: CUDA is not available (use auto or cpu)")
    return torch.device(name)


def atomic_write_bytes(path: Path, write: Callable[[Any], None], keep_previous: Path | None = None) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    With ``keep_previous``, the old ``path`` is moved there first (after the new file is
    complete), so a kill at any moment leaves at least one whole file behind.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {err.strerror or err}") from err


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=2, allow_nan=True).encode()))


def save_samples(path: Path, standardized: torch.Tensor, dataset: Dataset) -> None:
    """``.npz`` with ``standardized`` and ``native`` coordinates of the same points."""
    std = standardized.detach().float().cpu()
    native = dataset.destandardize(std.double()).float()
    atomic_write_bytes(path, lambda f: np.savez(f, standardized=std.numpy(), native=native.numpy()))


def load_checkpoint(run_dir: Path, map_location: Any = "cpu") -> dict | None:
    """The newest readable checkpoint of ``run_dir`` (falling back to the previous one), or None.

    Raises :class:`ConfigError` when checkpoints exist but none can be read.
    """
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
            missing = [k for k in STATE_KEYS if k not in state]
            if missing:
                raise ValueError(f"missing entries {missing}")
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
            problems.append(f"{path}: {type(err).__name__}: {err}")
            log.warning("checkpoint %s is corrupt or truncated (%s)%s", path, err,
                        "; trying the previous one" if name == CHECKPOINT else "")
            continue
        if problems:
            log.warning("using the previous good checkpoint %s (step %d)", path, state["step"])
        state["path"] = str(path)
        return state
    if problems:
        raise ConfigError("no readable checkpoint in " + str(run_dir) + ": " + "; ".join(problems))
    return None


def draw_batch(dataset: Dataset, time_sampler: TimeSampler, batch: int, gen: torch.Generator,
               guidance=None):
    """One training batch ``(x, e, r, t, cond)`` on the generator's device; no numpy, no host
    sync. ``cond`` is the guidance condition (None without guidance)."""
    x, y = dataset.sample(batch, gen)
    e = torch.randn(batch, dataset.dim, generator=gen, device=gen.device)
    r, t = time_sampler.sample(batch, gen)
    cond = guidance.condition(y, r, t, gen) if guidance is not None else None
    return x, e, r, t, cond


class BatchStream:
    """Training batches one per step. With ``pool > 0`` it draws ``pool`` batches in one call
    (one set of kernel launches for many steps) and hands them out in order; the batches left
    over are part of the checkpoint, so a resumed run sees the same data."""

    def __init__(self, dataset: Dataset, time_sampler: TimeSampler, batch: int,
                 gen: torch.Generator, guidance=None, pool: int = 0) -> None:
        self.args = (dataset, time_sampler, batch, gen, guidance)
        self.pool = int(pool)
        self.queue: list[tuple] = []

    def _chunks(self, a):
        """``a`` (a tensor, a condition of tensors, or None) cut into ``pool`` batches: clones,
        not views (forward-mode AD under torch.compile rejects views of a batch)."""
        if a is None:
            return [None] * self.pool
        if isinstance(a, tuple):
            return [type(a)(*parts) for parts in zip(*(self._chunks(c) for c in a))]
        return [c.clone() for c in a.split(self.args[2])]

    def __next__(self) -> tuple:
        if not self.pool:
            return draw_batch(*self.args)
        if not self.queue:
            dataset, time_sampler, batch, gen, guidance = self.args
            big = draw_batch(dataset, time_sampler, batch * self.pool, gen, guidance)
            self.queue = list(zip(*(self._chunks(a) for a in big)))[::-1]
        return self.queue.pop()

    def state_dict(self) -> list:
        return list(self.queue)

    def load_state_dict(self, queue: list) -> None:
        self.queue = list(queue)


def backward_step(step_loss: Callable, batch: tuple, update: EagerUpdate | FusedUpdate
                  ) -> tuple[torch.Tensor, dict]:
    """Loss (with its detached logs) and gradients; ``update`` zeroes the old gradients first.
    Clipping, the optimizer step and the EMA are ``update(decay)`` (see ``imf_exp/optim.py``)."""
    loss, logs = step_loss(*batch)
    update.zero_grad(set_to_none=True)
    loss.backward()
    return loss, logs


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """``min(decay, (1 + step) / (10 + step))`` with warm-up, else ``decay``."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


COMPILE_MIN_STEPS_CPU = 2000  # measured by imf_exp.bench: where compiling the loss pays on a CPU


def compile_decision(setting: str | bool, device: torch.device, steps: int) -> bool:
    """``trainer.compile``: ``on``/``true``, ``off``/``false``, or ``auto``: on CUDA, and on a CPU
    for runs of at least ``COMPILE_MIN_STEPS_CPU`` steps (where the ~20-30 s compile pays)."""
    value = str(setting).lower()
    if value in ("true", "on", "1"):
        return True
    if value in ("false", "off", "0"):
        return False
    if value != "auto":
        raise ConfigError(f"trainer.compile={setting!r} is not allowed: one of 'auto', 'on', 'off'")
    return device.type == "cuda" or steps >= COMPILE_MIN_STEPS_CPU


class Trainer:
    """Fits one model; every file it writes lands in ``run_dir``."""

    def __init__(self, steps: int = 4000, batch_size: int = 1024, ema_decay: float = 0.999,
                 ema_warmup: bool = True, log_every: int = 100, eval_every: int = 1000,
                 checkpoint_every: int = 1000, compile: str | bool = "auto", progress: bool = True,
                 max_bad_steps: int = 0, run_dir: Path | str = ".", device: str = "auto",
                 seed: int = 0, logger: Logger | None = None, config: dict | None = None,
                 data_pool: int = 0, fused_update: bool = False) -> None:
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.ema_decay, self.ema_warmup = float(ema_decay), bool(ema_warmup)
        self.log_every, self.eval_every = int(log_every), int(eval_every)
        self.checkpoint_every, self.progress = int(checkpoint_every), progress
        self.max_bad_steps, self.data_pool = int(max_bad_steps), int(data_pool)
        self.fused_update = bool(fused_update)
        self.run_dir = Path(run_dir)
        self.device = select_device(device)
        self.seed = int(seed)
        self.logger = logger or NoLogger()
        self.config = config or {}
        self._signal: int | None = None
        self.compile = compile_decision(compile, self.device, self.steps)

    def _on_signal(self, signum, frame) -> None:
        self._signal = signum

    # ---- the loop --------------------------------------------------------------------------
    def fit(self, model: nn.Module, objective: Objective, boundary: BoundaryMode,
            dataset: Dataset, time_sampler: TimeSampler, optimizer: OptimizerSpec,
            evaluator: Evaluator, resume_state: dict | None = None, guidance=None) -> dict:
        """Train from scratch, or from ``resume_state`` (see :func:`load_checkpoint`)."""
        from imf_exp.figures import make_figures  # matplotlib import is slow
        from imf_exp.plots import image_side, plot_image_samples, plot_loss, plot_samples

        for sub in ("", "samples", "figures"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        dev = self.device
        model = model.to(dev)
        ema = copy.deepcopy(model).requires_grad_(False).eval()
        params = [p for p in model.parameters() if p.requires_grad]
        ema_params = list(ema.parameters())
        opt, sched = optimizer.build(params, self.steps)
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        stream = BatchStream(dataset, time_sampler, self.batch_size, gen, guidance, self.data_pool)
        history: list[dict] = []
        evals: list[dict] = []
        start, train_time, bad_steps = 0, 0.0, 0
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
            ema.load_state_dict(resume_state["ema"])
            opt.load_state_dict(resume_state["optimizer"])
            sched.load_state_dict(resume_state["scheduler"])
            rng = resume_state["rng"]
            torch.set_rng_state(rng["torch"].cpu())
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            gen.set_state(rng["data"].cpu())
            stream.load_state_dict([tuple(None if x is None else x.to(dev) for x in b)
                                    for b in resume_state.get("data_pool", [])])
            history, evals = resume_state["history"], resume_state["evals"]
            start = int(resume_state["step"])
            train_time = float(resume_state.get("train_seconds", 0.0))
            bad_steps = int(resume_state.get("bad_steps", 0))
            log.info("resumed from %s at step %d", resume_state.get("path", "checkpoint"), start)

        def state(step: int) -> dict:
            return {"step": step, "model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                            "numpy": np.random.get_state(), "python": random.getstate(),
                            "data": gen.get_state()},
                    "data_pool": stream.state_dict(),
                    "history": history, "evals": evals, "config": self.config,
                    "train_seconds": train_time, "bad_steps": bad_steps}

        def save(step: int) -> None:
            atomic_write_bytes(self.run_dir / CHECKPOINT, lambda f: torch.save(state(step), f),
                               keep_previous=self.run_dir / PREVIOUS)

        def loss_fn(x, e, r, t, cond):
            return objective(model, x, e, r, t, boundary, cond)

        step_loss = compile_loss(loss_fn, device=dev) if self.compile else loss_fn
        update = optimizer.updater(opt, params, ema_params, fused=self.fused_update)
        pending: list[dict[str, torch.Tensor]] = []
        pending_steps: list[int] = []

        def flush(step: int, elapsed: float) -> None:
            """Read the pending per-step logs (one host sync) into a history row."""
            if not pending:
                return
            keys = list(pending[0].keys())
            stacked = torch.stack([torch.stack([p[k] for p in pending]) for k in keys]).float().cpu()
            finite = torch.isfinite(stacked)
            if not bool(finite.all()):
                first = int((~finite).any(0).nonzero()[0])
                terms = [k for k, ok in zip(keys, finite[:, first].tolist()) if not ok]
                raise NonFiniteError(pending_steps[first], terms, history, evals)
            row = {"step": step, **dict(zip(keys, stacked.mean(1).tolist())),
                   "lr": sched.get_last_lr()[0], "steps_per_s": len(pending) / max(elapsed, 1e-9)}
            history.append(row)
            pending.clear()
            pending_steps.clear()
            self.logger.log_scalars({f"train/{k}": v for k, v in row.items() if k != "step"}, step)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)

        def evaluate(step: int):
            metrics, samples = evaluator(ema)
            evals.append({"step": step, **metrics})
            self.logger.log_scalars({f"eval/{k}": v for k, v in metrics.items()}, step)
            first = evaluator.samplers[0][0]
            log.info("step %d: %s", step, ", ".join(
                f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(first) or k == "w2_floor"))
            save_samples(self.run_dir / "samples" / f"step{step:07d}_{first}.npz", samples[first], dataset)
            return metrics, samples

        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=start, desc="train", dynamic_ncols=True,
                       mininterval=0.5, disable=None)  # None: off when not a terminal
        previous_handlers = {}
        for sig in STOP_SIGNALS:
            try:
                previous_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: the launcher handles signals
                pass
        metrics = samples = None
        model.train()
        t_last = time.perf_counter()
        try:
            for step in range(start, self.steps):
                batch = next(stream)
                loss, logs = backward_step(step_loss, batch, update)
                if self.max_bad_steps:  # the check needs the norm before the update
                    logs["grad_norm"] = torch.nn.utils.get_total_norm([p.grad for p in params
                                                                       if p.grad is not None])
                if self.max_bad_steps and not bool(torch.isfinite(loss) & torch.isfinite(logs["grad_norm"])):
                    bad_steps += 1  # per-step sync only when skipping is allowed
                    log.warning("skipping step %d: non-finite loss or gradient (%d of at most %d)",
                                step + 1, bad_steps, self.max_bad_steps)
                    if bad_steps > self.max_bad_steps:
                        terms = [k for k, v in logs.items() if not bool(torch.isfinite(v).all())]
                        raise NonFiniteError(step + 1, terms, history, evals)
                    update.zero_grad(set_to_none=True)
                    continue
                logs["grad_norm"] = update(ema_decay_at(step, self.ema_decay, self.ema_warmup))
                sched.step()
                pending.append(logs)
                pending_steps.append(step + 1)
                done = step + 1
                if bar is not None:
                    bar.update(1)
                do_eval = (self.eval_every and done % self.eval_every == 0) or done == self.steps
                do_ckpt = ((self.checkpoint_every and done % self.checkpoint_every == 0)
                           or done == self.steps or self._signal is not None)
                if done % self.log_every == 0 or do_eval or do_ckpt:
                    elapsed = time.perf_counter() - t_last
                    train_time += elapsed
                    flush(done, elapsed)
                if do_eval:
                    metrics, samples = evaluate(done)
                if do_ckpt:
                    save(done)
                if self._signal is not None:
                    raise Interrupted(self._signal, done, history, evals)
                if do_eval or do_ckpt or done % self.log_every == 0:
                    t_last = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        if metrics is None:  # resumed from a finished run: evaluate once more
            metrics, samples = evaluator(ema)

        for name, x in samples.items():
            save_samples(self.run_dir / "samples" / f"{name}.npz", x, dataset)
        n_plot = min(len(evaluator.real), 2000)
        figures = {}
        if image_side(dataset.dim):  # image data: mosaics in native pixel values
            native = {k: dataset.destandardize(v.double()).numpy() for k, v in samples.items()}
            figures["samples"] = plot_image_samples(
                dataset.destandardize(evaluator.real.double()).numpy(), native,
                self.run_dir / "figures" / "samples.png", (image_side(dataset.dim),) * 2,
                title=f"{dataset.name}, step {self.steps} (EMA weights)", metrics=metrics)
        else:
            figures["samples"] = plot_samples(
                evaluator.real[:n_plot].numpy(), {k: v[:n_plot].numpy() for k, v in samples.items()},
                self.run_dir / "figures" / "samples.png",
                title=f"{dataset.name}, step {self.steps} (EMA weights, standardized)", metrics=metrics)
        figures["loss"] = plot_loss(history, self.run_dir / "figures" / "loss.png")
        figures.update(make_figures(self.run_dir, model=ema, dataset=dataset,
                                    sampling=objective.sampling, evals=evals, guidance=guidance))
        self.logger.log_images(figures, self.steps)
        return {"final": metrics, "evals": evals, "history": history, "train_seconds": train_time,
                "primary": evaluator.primary, "model": model, "ema": ema}
