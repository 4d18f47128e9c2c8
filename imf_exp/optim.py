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
