"""The guidance condition a conditional network takes beside ``(z, r, t)``.

Per example: a class label (``K``, the number of classes, is the null label), the guidance scale
``omega >= 1`` and the CFG interval ``[t_lo, t_hi]``. Models, objectives, samplers and the
``sample`` command all pass it around; how training draws it lives in
:mod:`imf_exp.objectives.guidance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from imf_exp.errors import check


class Condition(NamedTuple):
    """Per-example conditioning, each ``(B,)``: labels (long; ``K`` = null), ``omega``, interval."""

    labels: torch.Tensor
    omega: torch.Tensor
    t_lo: torch.Tensor
    t_hi: torch.Tensor

    @staticmethod
    def build(labels: torch.Tensor, omega: float | torch.Tensor = 1.0,
              interval: Sequence[float] = (0.0, 1.0)) -> Condition:
        """Inference conditioning: the same ``omega`` and interval for every example.

        Checks the ranges on the host from the Python numbers (no device sync for a float
        ``omega``)."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        n, dev = labels.shape[0], labels.device
        lo, hi = float(interval[0]), float(interval[1])
        check(0.0 <= lo <= hi <= 1.0, "interval", [lo, hi], "two numbers 0 <= t_lo <= t_hi <= 1")
        if isinstance(omega, torch.Tensor):
            check(bool((omega >= 1).all()), "omega", omega.min().item(), "a number >= 1")
        else:
            check(float(omega) >= 1, "omega", omega, "a number >= 1")
        omega = torch.as_tensor(omega, dtype=torch.float32, device=dev).expand(n).clone()
        return Condition(labels, omega, torch.full((n,), lo, device=dev),
                         torch.full((n,), hi, device=dev))

    @staticmethod
    def null(like: torch.Tensor, num_classes: int) -> Condition:
        """The unconditional query for a batch shaped like ``like`` (``(B,)``): the null label,
        ``omega = 1``, interval ``[0, 1]``, on ``like``'s device and dtype."""
        n, dev, dtype = like.shape[0], like.device, like.dtype
        return Condition(torch.full((n,), num_classes, dtype=torch.long, device=dev),
                         torch.ones(n, device=dev, dtype=dtype), torch.zeros(n, device=dev, dtype=dtype),
                         torch.ones(n, device=dev, dtype=dtype))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Condition:
        f = (lambda x: x.to(device=device, dtype=dtype)) if dtype else (lambda x: x.to(device))
        return Condition(self.labels.to(device), f(self.omega), f(self.t_lo), f(self.t_hi))

    def effective_omega(self, t: torch.Tensor) -> torch.Tensor:
        """``omega`` where ``t_lo <= t <= t_hi``, else 1."""
        inside = (t >= self.t_lo) & (t <= self.t_hi)
        return torch.where(inside, self.omega, torch.ones_like(self.omega))

    def velocity_condition(self, omega: torch.Tensor | None = None) -> Condition:
        """The condition of an instantaneous-velocity query: interval ``[0, 1]``."""
        w = self.omega if omega is None else omega
        return Condition(self.labels, w, torch.zeros_like(w), torch.ones_like(w))

    def cat(self, other: Condition) -> Condition:
        """Both batches, one after the other."""
        return Condition(*(torch.cat([a, b]) for a, b in zip(self, other)))
