"""Time samplers: ``(r, t)`` with ``0 <= r <= t <= 1``.

Draw ``a, b`` i.i.d. from a base distribution, set ``t = max(a, b)``, ``r = min(a, b)``, then
with probability ``p_equal`` set ``r = t`` (a flow-matching sample of the boundary).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from imf_exp.config import LogitNormalTimeConfig, UniformTimeConfig, default
from imf_exp.errors import check


class TimeSampler(ABC):
    def __init__(self, p_equal: float = default(UniformTimeConfig, "p_equal")) -> None:
        check(0.0 <= p_equal <= 1.0, "time_sampler.p_equal", p_equal, "a number in [0, 1]")
        self.p_equal = float(p_equal)

    @abstractmethod
    def base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n,)`` i.i.d. draws in [0, 1] on the generator's device."""

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(r, t)``, each ``(n,)``, with ``r <= t``."""
        a, b = self.base(2 * n, generator).view(2, n)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        equal = torch.rand(n, generator=generator, device=generator.device) < self.p_equal
        return torch.where(equal, t, r), t


class UniformTimeSampler(TimeSampler):
    """Base distribution U(0, 1)."""

    def base(self, n, generator):
        return torch.rand(n, generator=generator, device=generator.device)


class LogitNormalTimeSampler(TimeSampler):
    """Base distribution ``sigmoid(N(mu, sigma^2))`` (MeanFlow/iMF: ``mu=-0.4, sigma=1``)."""

    def __init__(self, mu: float = default(LogitNormalTimeConfig, "mu"),
                 sigma: float = default(LogitNormalTimeConfig, "sigma"),
                 p_equal: float = default(LogitNormalTimeConfig, "p_equal")) -> None:
        super().__init__(p_equal)
        check(sigma > 0, "time_sampler.sigma", sigma, "a number > 0")
        self.mu, self.sigma = float(mu), float(sigma)

    def base(self, n, generator):
        eps = torch.randn(n, generator=generator, device=generator.device)
        return torch.sigmoid(self.mu + self.sigma * eps)
