"""Residual MLP with adaptive layer-norm time conditioning (DiT's adaLN-Zero, for vectors).

``h = W_in z``; each block: ``h += g * MLP(LN(h) (1 + a) + b)`` where ``(a, b, g)`` are
linear in ``c = MLP(time features)`` and start at zero, so every block starts as the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from imf_exp.config import ResMLPConfig, default
from imf_exp.errors import check
from imf_exp.models.base import AverageVelocityModel, make_activation


class _Block(nn.Module):
    def __init__(self, width: int, act: str, expansion: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, expansion * width), make_activation(act),
                                 nn.Linear(expansion * width, width))
        # three maps rather than one chunked: views of a JVP'd output do not compile (torch 2.13)
        self.scale, self.shift, self.gate = (nn.Linear(width, width) for _ in range(3))
        for lin in (self.scale, self.shift, self.gate):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        modulated = self.norm(h) * (1 + self.scale(c)) + self.shift(c)
        return h + self.gate(c) * self.mlp(modulated)


class ResMLP(AverageVelocityModel):
    """``depth`` residual blocks of ``width`` units (hidden ``expansion * width``), adaLN time conditioning."""

    def __init__(self, dim: int, width: int = default(ResMLPConfig, "width"),
                 depth: int = default(ResMLPConfig, "depth"),
                 expansion: int = default(ResMLPConfig, "expansion"), **kwargs) -> None:
        check(expansion >= 1, "model.expansion", expansion, "an int >= 1")
        super().__init__(dim, width, depth, **kwargs)
        self.inp = nn.Linear(self.in_dim, width)
        self.cond = nn.Sequential(nn.Linear(self.cond_dim, width), make_activation(self.act_name),
                                  nn.Linear(width, width), make_activation(self.act_name))
        self.blocks = nn.ModuleList(_Block(width, self.act_name, expansion) for _ in range(depth))
        # no affine: the output heads absorb it, and an affine LayerNorm under torch.func.jvp
        # does not compile on torch 2.13
        self.out_norm = nn.LayerNorm(width, elementwise_affine=False)

    def features(self, z: torch.Tensor, time_features: torch.Tensor) -> torch.Tensor:
        c = self.cond(time_features)
        h = self.inp(z)
        for block in self.blocks:
            h = block(h, c)
        return self.out_norm(h)
