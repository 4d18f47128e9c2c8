"""Time parametrizations and scalar embeddings.

The network sees time through two choices (both ablation axes):

* ``time_input``: which scalars are fed, ``"t,r"``, ``"t,t-r"`` (MeanFlow's best) or ``"t-r"``;
* ``embedding``: how each scalar ``s`` in [0, 1] is embedded:

  - ``sinusoidal``: ``[cos(scale*s*f_k), sin(scale*s*f_k)]`` with
    ``f_k = max_period^(-k/half)``, ``k = 0..half-1``. With ``scale = 1`` (MeanFlow's
    official choice) every frequency is <= 1 rad per unit time: low frequencies only.
    ``scale = 1000`` is the DDPM convention (high frequencies).
  - ``fourier``: ``[cos(2 pi b_k s), sin(2 pi b_k s)]`` with fixed ``b_k ~ N(0, scale^2)``.
  - ``raw``: ``scale * s`` itself (one feature).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imf_exp.errors import ConfigError, check

TIME_INPUTS = ("t,r", "t,t-r", "t-r")
EMBEDDINGS = ("sinusoidal", "fourier", "raw")


def time_scalars(r: torch.Tensor, t: torch.Tensor, time_input: str) -> list[torch.Tensor]:
    """The scalars (each ``(B,)``) the network sees for ``(r, t)``."""
    if time_input == "t,r":
        return [t, r]
    if time_input == "t,t-r":
        return [t, t - r]
    if time_input == "t-r":
        return [t - r]
    raise ConfigError(f"model.time_input={time_input!r} is not allowed: one of {list(TIME_INPUTS)}")


class ScalarEmbedding(nn.Module):
    """Embeds a batch of scalars ``(B,)`` into ``(B, out_dim)`` features."""

    def __init__(self, kind: str = "sinusoidal", dim: int = 64, scale: float = 1.0,
                 max_period: float = 10000.0) -> None:
        super().__init__()
        check(kind in EMBEDDINGS, "model.embedding", kind, f"one of {list(EMBEDDINGS)}")
        check(scale > 0, "model.embedding_scale", scale, "a number > 0")
        if kind != "raw":
            check(dim >= 2 and dim % 2 == 0, "model.embedding_dim", dim, "an even int >= 2")
        check(max_period > 1, "model.max_period", max_period, "a number > 1")
        self.kind, self.scale = kind, float(scale)
        self.out_dim = 1 if kind == "raw" else int(dim)
        half = self.out_dim // 2
        if kind == "sinusoidal":
            freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half)
            self.register_buffer("freqs", scale * freqs)
        elif kind == "fourier":
            self.register_buffer("freqs", 2 * math.pi * scale * torch.randn(half))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.kind == "raw":
            return self.scale * s[:, None]
        angle = s[:, None] * self.freqs
        return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)


class TimeFeatures(nn.Module):
    """``(r, t) -> (B, out_dim)``: the chosen scalars, each with its own embedding."""

    def __init__(self, time_input: str = "t,t-r", kind: str = "sinusoidal", dim: int = 64,
                 scale: float = 1.0, max_period: float = 10000.0) -> None:
        super().__init__()
        check(time_input in TIME_INPUTS, "model.time_input", time_input,
              f"one of {list(TIME_INPUTS)}")
        self.time_input = time_input
        n = len(time_scalars(torch.zeros(1), torch.zeros(1), time_input))
        self.embeds = nn.ModuleList(ScalarEmbedding(kind, dim, scale, max_period) for _ in range(n))
        self.out_dim = sum(e.out_dim for e in self.embeds)

    def forward(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scalars = time_scalars(r, t, self.time_input)
        return torch.cat([e(s) for e, s in zip(self.embeds, scalars)], dim=-1)


class ConditionFeatures(nn.Module):
    """Guidance inputs ``(label, omega, t_lo, t_hi) -> (B, out_dim)``.

    The label (``num_classes`` is the null label) gets a learned embedding of ``dim`` features;
    ``omega`` enters as ``1 - 1/omega`` in ``[0, 1)`` (the guided target's coefficient) and the
    interval ends as they are, each through a :class:`ScalarEmbedding` like time.
    """

    def __init__(self, num_classes: int, kind: str = "sinusoidal", dim: int = 64,
                 scale: float = 1.0, max_period: float = 10000.0) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.label = nn.Embedding(self.num_classes + 1, dim)
        self.scalars = nn.ModuleList(ScalarEmbedding(kind, dim, scale, max_period) for _ in range(3))
        self.out_dim = dim + sum(e.out_dim for e in self.scalars)

    def forward(self, cond) -> torch.Tensor:
        labels, omega, t_lo, t_hi = cond
        scalars = (1.0 - 1.0 / omega, t_lo, t_hi)
        return torch.cat([self.label(labels)] + [e(s) for e, s in zip(self.scalars, scalars)], dim=-1)
