"""Optimizer, learning-rate schedule and gradient clipping in one config node."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from imf_exp.errors import check

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "cosine", "linear")


class OptimizerSpec:
    """Builds the optimizer and a ``LambdaLR`` schedule: linear warm-up over ``warmup_steps``,
    then ``constant``, ``cosine`` or ``linear`` decay to ``min_lr_ratio * lr`` at the last step.
    ``grad_clip > 0`` clips the global gradient norm. ``fused``: PyTorch's fused Adam/AdamW
    kernel (one kernel for all parameters; CPU and CUDA) instead of the ``foreach`` one; same
    math, different rounding."""

    def __init__(self, name: str = "adam", lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, warmup_steps: int = 100,
                 schedule: str = "cosine", min_lr_ratio: float = 0.0, grad_clip: float = 1.0,
                 fused: bool = False) -> None:
        check(name in OPTIMIZERS, "optimizer.name", name, f"one of {sorted(OPTIMIZERS)}")
        check(lr > 0, "optimizer.lr", lr, "a number > 0")
        check(len(betas) == 2 and all(0 <= b < 1 for b in betas), "optimizer.betas", list(betas),
              "two numbers in [0, 1)")
        check(eps > 0, "optimizer.eps", eps, "a number > 0")
        check(weight_decay >= 0, "optimizer.weight_decay", weight_decay, "a number >= 0")
        check(warmup_steps >= 0, "optimizer.warmup_steps", warmup_steps, "an int >= 0")
        check(schedule in SCHEDULES, "optimizer.schedule", schedule, f"one of {list(SCHEDULES)}")
        check(0 <= min_lr_ratio <= 1, "optimizer.min_lr_ratio", min_lr_ratio, "a number in [0, 1]")
        check(grad_clip >= 0, "optimizer.grad_clip", grad_clip, "a number >= 0 (0 disables)")
        self.name, self.lr, self.betas, self.eps = name, float(lr), tuple(betas), float(eps)
        self.weight_decay, self.warmup_steps = float(weight_decay), int(warmup_steps)
        self.schedule, self.min_lr_ratio, self.grad_clip = schedule, float(min_lr_ratio), float(grad_clip)
        self.fused = bool(fused)

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of ``lr`` at optimizer step ``step`` (0-based)."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.schedule == "constant":
            return warm
        frac = min(1.0, step / max(1, total_steps - 1))
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1 - frac
        return warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * shape)

    def build(self, params: Iterable[torch.nn.Parameter], total_steps: int
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        opt = OPTIMIZERS[self.name](params, lr=self.lr, betas=self.betas, eps=self.eps,
                                    weight_decay=self.weight_decay,
                                    **({"fused": True} if self.fused else {"foreach": True}))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self.lr_factor(s, total_steps))
        return opt, sched


class FusedUpdate:
    """Gradient clipping, the Adam/AdamW step and the EMA update as one compiled function.

    The eager path is three library calls (``clip_grad_norm_``, ``optimizer.step``,
    ``_foreach_lerp_``), each a handful of kernels plus Python; on small models that overhead
    is a large part of a step. Here the same math runs as one ``torch.compile``d graph
    (``trainer.fused_update=true``), per parameter ``p`` with gradient ``g``::

        n = || (||g_1||, ..., ||g_k||) ||,  g <- g * min(1, clip / (n + 1e-6))
        adam:  g <- g + wd * p            adamw:  p <- p * (1 - lr * wd)
        m <- m + (1 - b1) (g - m),  v <- b2 v + (1 - b2) g^2,  s <- s + 1
        p <- p - lr / (1 - b1^s) * m / (sqrt(v) / sqrt(1 - b2^s) + eps)
        ema <- ema + (1 - decay) (p - ema)

    PyTorch's own update order and formulas (``torch.optim.Adam``/``AdamW``, non-amsgrad),
    with the bias corrections in float32 on the device instead of float64 on the host: equal
    to the eager path to float32 rounding (tested). The moments and the step count live in the
    optimizer's ``state`` under PyTorch's keys (``exp_avg``, ``exp_avg_sq``, ``step``), so its
    ``state_dict`` (checkpoints, resume) is unchanged; ``optimizer.step()`` is never called.
    The learning rate is read from the optimizer's param group (the LR scheduler still steps)
    into a 0-d tensor each call: no recompilation as it changes. Returns the pre-clip norm.
    """

    def __init__(self, opt: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                 ema_params: Sequence[torch.Tensor], spec: OptimizerSpec, compile: bool = True) -> None:
        check(len(opt.param_groups) == 1, "optimizer", len(opt.param_groups),
              "one param group for trainer.fused_update")
        self.opt, self.params, self.ema = opt, list(params), list(ema_params)
        self.decoupled = spec.name == "adamw"
        self.b1, self.b2 = spec.betas
        self.eps, self.wd = spec.eps, spec.weight_decay
        self.clip = spec.grad_clip if spec.grad_clip > 0 else math.inf
        device = self.params[0].device
        self.lr = torch.zeros((), device=device)
        self.decay = torch.zeros((), device=device)
        self._fn = torch.compile(self._update) if compile else self._update

    def _state(self, params: list[torch.Tensor]) -> tuple[list, list, list]:
        """The moments and step counts, created as PyTorch's Adam would on its first step."""
        m, v, s = [], [], []
        for p in params:
            st = self.opt.state[p]
            if not st:
                st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif st["step"].device != p.device:  # a checkpoint of the eager path keeps it on the CPU
                st["step"] = st["step"].to(p.device)
            m.append(st["exp_avg"])
            v.append(st["exp_avg_sq"])
            s.append(st["step"])
        return m, v, s

    @torch.no_grad()
    def _update(self, grads, params, ema, exp_avg, exp_avg_sq, steps, lr, decay):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        coef = torch.clamp(self.clip / (norm + 1e-6), max=1.0)
        b1, b2 = self.b1, self.b2
        for p, g, m, v, s, e in zip(params, grads, exp_avg, exp_avg_sq, steps, ema):
            g = g * coef
            if self.wd and not self.decoupled:
                g = g + self.wd * p
            if self.wd and self.decoupled:
                p.mul_(1 - lr * self.wd)
            s.add_(1)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step_size = lr / (1 - b1 ** s)
            denom = v.sqrt() / torch.sqrt(1 - b2 ** s) + self.eps
            p.sub_(step_size * m / denom)
            e.lerp_(p, 1 - decay)
        return norm

    def __call__(self, ema_decay: float) -> torch.Tensor:
        """One update with the gradients in ``p.grad``; returns the global norm before clipping."""
        self.lr.fill_(self.opt.param_groups[0]["lr"])
        self.decay.fill_(ema_decay)
        self.opt._opt_called = True  # what the LR scheduler checks to know the optimizer stepped
        params, ema = self.params, self.ema
        if any(p.grad is None for p in params):  # as torch.optim: such parameters are left alone
            ema = [e for p, e in zip(params, ema) if p.grad is not None]
            params = [p for p in params if p.grad is not None]
        return self._fn([p.grad for p in params], params, ema, *self._state(params),
                        self.lr, self.decay)
