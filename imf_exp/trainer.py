"""The training loop: one step (shared with the benchmark) and a short ``fit``.

The trainer knows no dataset, objective or plot: it draws ``x`` from a dataset object, noise
and times from the time sampler, calls ``objective(model, x, e, r, t, boundary, cond)`` and
steps the optimizer. Per step there is no host-device sync: loss terms stay on the device and
are read every ``log_every`` steps (and before every checkpoint, so a checkpoint never holds
non-finite weights). ``max_bad_steps > 0`` trades that for a per-step check that skips bad
steps. Files are the run folder's business: ``fit`` hands checkpoints and evaluation samples to
a store (:class:`imf_exp.run_dir.RunDir`) and returns what the entry point needs.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from imf_exp.devices import synchronize
from imf_exp.errors import ConfigError

if TYPE_CHECKING:
    from imf_exp.build import Parts
    from imf_exp.metrics import Evaluator
    from imf_exp.optim import OptimizerSpec

log = logging.getLogger(__name__)

#: signals that make a run checkpoint the current step and stop (a scheduler's warnings; see
#: :func:`imf_exp.scheduler.stop_signals` for the ones a submitit job adds)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
COMPILE_MIN_STEPS_CPU = 2000  # measured by imf_exp.bench: where compiling the loss pays on a CPU


class NonFiniteError(RuntimeError):
    """A loss term or the gradient norm became NaN or infinite at ``step``."""

    def __init__(self, step: int, terms: list[str]) -> None:
        super().__init__(step, terms)  # picklable: the arguments are the state
        self.step, self.terms = step, terms

    def __str__(self) -> str:
        return f"non-finite {', '.join(self.terms)} at step {self.step}"


class Interrupted(RuntimeError):
    """A stop signal arrived; a checkpoint was written at ``step``."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(signum, step)
        self.signum, self.step = signum, step

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name} at step {self.step}"


class Store(Protocol):
    """Where ``fit`` puts what it produces (a run folder)."""

    def save_checkpoint(self, state: dict) -> None: ...

    def save_samples(self, name: str, standardized: torch.Tensor, native: torch.Tensor) -> Any: ...


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """``min(decay, (1 + step) / (10 + step))`` with warm-up, else ``decay``."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


def compile_decision(mode: str, device: torch.device, steps: int) -> bool:
    """``trainer.compile``: ``on``, ``off``, or ``auto``: on CUDA, and on a CPU for runs of at
    least ``COMPILE_MIN_STEPS_CPU`` steps (where the compile time pays)."""
    mode = str(mode)
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"trainer.compile={mode!r} is not allowed: one of 'auto', 'on', 'off'")
    if mode == "auto":
        return device.type == "cuda" or steps >= COMPILE_MIN_STEPS_CPU
    return mode == "on"


# ---- data ------------------------------------------------------------------------------------

def draw_batch(dataset, time_sampler, batch: int, gen: torch.Generator, guidance=None) -> tuple:
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

    def __init__(self, dataset, time_sampler, batch: int, gen: torch.Generator, guidance=None,
                 pool: int = 0) -> None:
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


# ---- one step --------------------------------------------------------------------------------

class TrainStep:
    """One optimization step of ``model``: the loss (``torch.compile``d with the JVP inside when
    ``compile``), ``backward``, then clipping + optimizer + EMA (:mod:`imf_exp.optim`) and the
    LR schedule. The training loop and the benchmark both run it.

    ``backward(batch)`` and ``apply(k)`` are its two halves (the loop checks finiteness between
    them when bad steps may be skipped); ``step(batch, k)`` is both. Nothing syncs the host.
    ``tag`` gives the compiled loss its own Dynamo cache (see :func:`imf_exp.compile.own_code`);
    ``compiler`` replaces :func:`imf_exp.compile.compile_loss` (e.g. a plain ``torch.compile``).
    """

    def __init__(self, model: nn.Module, objective, boundary, optimizer: OptimizerSpec,
                 total_steps: int, device: torch.device, compile: bool = False,
                 fused_update: bool = False, ema_decay: float = 0.999, ema_warmup: bool = True,
                 tag: str | None = None, compiler: Callable[[Callable], Callable] | None = None
                 ) -> None:
        self.model = model.to(device).train()
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt, self.sched = optimizer.build(self.params, total_steps)
        self.ema_decay, self.ema_warmup = float(ema_decay), bool(ema_warmup)

        def loss_fn(x, e, r, t, cond):
            return objective(self.model, x, e, r, t, boundary, cond)

        if compile:  # inductor is imported only when compiling
            from imf_exp.compile import compile_loss, own_code

            fn = own_code(loss_fn, tag) if tag else loss_fn
            self.loss = compiler(fn) if compiler else compile_loss(fn, device=device)
        else:
            self.loss = loss_fn
        self.update = optimizer.updater(self.opt, self.params, list(self.ema.parameters()),
                                        fused=fused_update)

    def backward(self, batch: tuple) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss (with its detached logs) and its gradients; the old gradients are zeroed."""
        loss, logs = self.loss(*batch)
        self.update.zero_grad(set_to_none=True)
        loss.backward()
        return loss, logs

    def apply(self, k: int) -> torch.Tensor:
        """Clip, step the optimizer and the EMA (decay of step ``k``), step the schedule; returns
        the gradient norm before clipping."""
        norm = self.update(ema_decay_at(k, self.ema_decay, self.ema_warmup))
        self.sched.step()
        return norm

    def step(self, batch: tuple, k: int) -> dict[str, torch.Tensor]:
        _, logs = self.backward(batch)
        logs["grad_norm"] = self.apply(k)
        return logs

    def grad_norm(self) -> torch.Tensor:
        return torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])


# ---- the loop --------------------------------------------------------------------------------

@dataclass
class Progress:
    """What a run has done so far; part of every checkpoint."""

    step: int = 0
    history: list[dict] = field(default_factory=list)  # one row per log interval
    evals: list[dict] = field(default_factory=list)  # one row per evaluation
    train_seconds: float = 0.0
    bad_steps: int = 0


@dataclass
class FitResult:
    final: dict[str, float]  # the last evaluation's metrics
    samples: dict[str, torch.Tensor]  # its samples (standardized), by sampler
    progress: Progress
    ema: nn.Module  # the EMA model (evaluation and sampling use it)


class Trainer:
    """Fits one model; checkpoints and evaluation samples go to the ``store`` given to :meth:`fit`."""

    def __init__(self, steps: int, batch_size: int, ema_decay: float, ema_warmup: bool,
                 log_every: int, eval_every: int, checkpoint_every: int, compile: str,
                 progress: bool, max_bad_steps: int, data_pool: int, fused_update: bool,
                 tf32: bool = False, sync_check: bool = False, *, device: torch.device, seed: int,
                 logger=None, config: dict | None = None,
                 stop_signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.ema_decay, self.ema_warmup = float(ema_decay), bool(ema_warmup)
        self.log_every, self.eval_every = int(log_every), int(eval_every)
        self.checkpoint_every, self.progress = int(checkpoint_every), bool(progress)
        self.max_bad_steps, self.data_pool = int(max_bad_steps), int(data_pool)
        self.fused_update = bool(fused_update)
        self.sync_check = bool(sync_check) and device.type == "cuda"
        if device.type == "cuda":  # a process-wide choice, made where the run's device is known
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(tf32)
        self.device, self.seed = device, int(seed)
        self.logger, self.config = logger, config or {}
        self.compile = compile_decision(compile, device, self.steps)
        self.state = Progress()  # read by the entry point when fit raises
        self.stop_signals = tuple(stop_signals)
        self._signal: int | None = None

    def fit(self, parts: Parts, evaluator: Evaluator, store: Store,
            resume_state: dict | None = None) -> FitResult:
        """Train from scratch, or from ``resume_state`` (a checkpoint's contents). A stop signal
        that arrives from here on makes the run checkpoint the step it is at and raise
        :class:`Interrupted` (one that arrives while the step is being built is acted on after
        the first step)."""
        with self._signals():
            return self._fit(parts, evaluator, store, resume_state)

    def _fit(self, parts: Parts, evaluator: Evaluator, store: Store,
             resume_state: dict | None) -> FitResult:
        step_fn = TrainStep(parts.model, parts.objective, parts.boundary, parts.optimizer,
                            self.steps, self.device, self.compile, self.fused_update,
                            self.ema_decay, self.ema_warmup)
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        stream = BatchStream(parts.dataset, parts.time_sampler, self.batch_size, gen,
                             parts.guidance, self.data_pool)
        if resume_state is not None:
            self._restore(resume_state, step_fn, gen, stream)
        pending: list[tuple[int, dict]] = []
        metrics = samples = None
        with self._progress_bar() as bar:
            t_last = time.perf_counter()
            first = self.state.step
            for k in range(first, self.steps):
                with self._no_sync(k > first):  # the first step compiles and allocates
                    logs = self._step(step_fn, next(stream), k)
                if logs is None:  # a skipped bad step
                    continue
                done = self.state.step = k + 1
                pending.append((done, logs))
                bar.update(1)
                do_eval = (self.eval_every and done % self.eval_every == 0) or done == self.steps
                do_ckpt = ((self.checkpoint_every and done % self.checkpoint_every == 0)
                           or done == self.steps or self._signal is not None)
                if done % self.log_every == 0 or do_eval or do_ckpt:
                    synchronize(self.device)  # the interval's device work is part of its time
                    self._flush(pending, done, time.perf_counter() - t_last, step_fn, bar)
                if do_eval:
                    metrics, samples = self._evaluate(evaluator, step_fn.ema, parts.dataset, store)
                if do_ckpt:
                    store.save_checkpoint(self._checkpoint(step_fn, gen, stream))
                if self._signal is not None:
                    raise Interrupted(self._signal, done)
                if do_eval or do_ckpt or done % self.log_every == 0:
                    t_last = time.perf_counter()
        if metrics is None:  # resumed from a finished run: evaluate once more
            metrics, samples = evaluator(step_fn.ema)
        return FitResult(metrics, samples, self.state, step_fn.ema)

    def _step(self, step_fn: TrainStep, batch: tuple, k: int) -> dict | None:
        """One step; with ``max_bad_steps`` the loss and gradient norm are checked first (a host
        sync), and a non-finite step is skipped (None) until too many were."""
        if not self.max_bad_steps:
            return step_fn.step(batch, k)
        loss, logs = step_fn.backward(batch)
        norm = step_fn.grad_norm()
        if not bool(torch.isfinite(loss) & torch.isfinite(norm)):
            self.state.bad_steps += 1
            log.warning("skipping step %d: non-finite loss or gradient (%d of at most %d)",
                        k + 1, self.state.bad_steps, self.max_bad_steps)
            if self.state.bad_steps > self.max_bad_steps:
                logs["grad_norm"] = norm
                raise NonFiniteError(k + 1, [n for n, v in logs.items() if not bool(torch.isfinite(v).all())])
            step_fn.update.zero_grad(set_to_none=True)
            return None
        logs["grad_norm"] = step_fn.apply(k)
        return logs

    def _flush(self, pending: list[tuple[int, dict]], step: int, elapsed: float,
               step_fn: TrainStep, bar) -> None:
        """Read the pending per-step logs (one host sync) into a history row; raise
        :class:`NonFiniteError` at the first step with a non-finite term."""
        self.state.train_seconds += elapsed
        if not pending:
            return
        keys = list(pending[0][1])
        stacked = torch.stack([torch.stack([logs[k] for _, logs in pending]) for k in keys]).float().cpu()
        finite = torch.isfinite(stacked)
        if not bool(finite.all()):
            first = int((~finite).any(0).nonzero()[0])
            raise NonFiniteError(pending[first][0], [k for k, ok in zip(keys, finite[:, first].tolist())
                                                     if not ok])
        row = {"step": step, **dict(zip(keys, stacked.mean(1).tolist())),
               "lr": step_fn.sched.get_last_lr()[0], "steps_per_s": len(pending) / max(elapsed, 1e-9)}
        self.state.history.append(row)
        pending.clear()
        if self.logger is not None:
            self.logger.log_scalars({f"train/{k}": v for k, v in row.items() if k != "step"}, step)
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)

    def _evaluate(self, evaluator: Evaluator, ema: nn.Module, dataset, store: Store):
        metrics, samples = evaluator(ema)
        step = self.state.step
        self.state.evals.append({"step": step, **metrics})
        if self.logger is not None:
            self.logger.log_scalars({f"eval/{k}": v for k, v in metrics.items()}, step)
        first = evaluator.samplers[0][0]
        log.info("step %d: %s", step, ", ".join(
            f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(first) or k == "w2_floor"))
        x = samples[first]
        store.save_samples(f"step{step:07d}_{first}", x, dataset.destandardize(x.double()))
        return metrics, samples

    # ---- checkpoints ---------------------------------------------------------------------------
    def _checkpoint(self, step_fn: TrainStep, gen: torch.Generator, stream: BatchStream) -> dict:
        s = self.state
        return {"step": s.step, **step_fn.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                        "python": random.getstate(), "data": gen.get_state(),
                        "data_device": gen.device.type},
                "data_pool": stream.state_dict(), "dataset": stream.args[0].state_dict(),
                "history": s.history, "evals": s.evals,
                "config": self.config, "train_seconds": s.train_seconds, "bad_steps": s.bad_steps}

    def _restore(self, state: dict, step_fn: TrainStep, gen: torch.Generator,
                 stream: BatchStream) -> None:
        step_fn.load_state_dict(state)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        saved_device = rng.get("data_device", "cpu" if rng["data"].numel() > 16 else "cuda")
        if saved_device == gen.device.type:
            gen.set_state(rng["data"].cpu())
        else:  # a generator's state is device-specific: the data stream cannot continue as it was
            gen.manual_seed(self.seed * 1_000_003 + int(state["step"]))
            log.warning("resuming on %s a run whose data generator was on %s: the data stream is "
                        "reseeded (from seed and step), so the result will differ from an "
                        "uninterrupted run", gen.device.type, saved_device)
        stream.load_state_dict([tuple(None if x is None else x.to(self.device) for x in b)
                                for b in state.get("data_pool", [])])
        stream.args[0].load_state_dict(state.get("dataset", {}))
        self.state = Progress(int(state["step"]), state["history"], state["evals"],
                              float(state.get("train_seconds", 0.0)), int(state.get("bad_steps", 0)))
        log.info("resumed from %s at step %d", state.get("path", "checkpoint"), self.state.step)

    @contextlib.contextmanager
    def _no_sync(self, active: bool) -> Iterator[None]:
        """``trainer.sync_check`` on CUDA: a host-device synchronization inside the block raises
        (``torch.cuda.set_sync_debug_mode("error")``)."""
        if not (active and self.sync_check):
            yield
            return
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")

    # ---- signals and the progress bar ----------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self._signal = signum

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Stop signals set a flag; the loop checkpoints the step it is at and raises
        :class:`Interrupted`. The previous handlers come back afterwards."""
        previous = {}
        for sig in self.stop_signals:
            try:
                previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: the launcher handles signals
                pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def _progress_bar(self) -> Iterator[Any]:
        """tqdm on a terminal (log lines are printed above it), nothing otherwise."""
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        bar = tqdm(total=self.steps, initial=self.state.step, desc="train", dynamic_ncols=True,
                   mininterval=0.5, disable=None if self.progress else True)
        try:
            with logging_redirect_tqdm():
                yield bar
        finally:
            bar.close()
