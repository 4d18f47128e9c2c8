"""The design note's shape: ``[z, emb(time)]`` concatenated, then a plain MLP."""

from __future__ import annotations

import torch
from torch import nn

from imf_exp.config import MLPConfig, default
from imf_exp.models.base import AverageVelocityModel, make_activation


class MLP(AverageVelocityModel):
    """``depth`` hidden layers of ``width`` units on the concatenation of ``z`` and time features."""

    def __init__(self, dim: int, width: int = default(MLPConfig, "width"),
                 depth: int = default(MLPConfig, "depth"), **kwargs) -> None:
        super().__init__(dim, width, depth, **kwargs)
        layers: list[nn.Module] = []
        fan_in = self.in_dim + self.cond_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), make_activation(self.act_name)]
            fan_in = width
        self.trunk = nn.Sequential(*layers)

    def features(self, z: torch.Tensor, time_features: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.cat([z, time_features], dim=-1))
