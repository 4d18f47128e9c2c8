"""Two-dimensional toy distributions, drawn i.i.d. in torch on the generator's device.

Unlike scikit-learn's ``make_moons``/``make_circles`` (points on an even grid along the
curve), every point here is an independent draw, so two reference sets are as far apart
as two i.i.d. samples should be: the W2 floor is honest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from imf_exp.config import (
    CheckerboardConfig,
    CirclesConfig,
    EightGaussiansConfig,
    MoonsConfig,
    SpiralsConfig,
    SwissRollConfig,
    default,
)
from imf_exp.data.base import Dataset
from imf_exp.errors import check


def _rand(n: int, g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=g, device=g.device)


def _randn(n: int, g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(n, *shape, generator=g, device=g.device)


def _randint(high: int, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=g, device=g.device)


class Moons(Dataset):
    """Two interleaving half circles of radius 1 (labels 0, 1), plus N(0, noise^2) jitter."""

    num_classes = 2

    def __init__(self, noise: float = default(MoonsConfig, "noise"),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        check(noise >= 0, "dataset.noise", noise, "a number >= 0")
        self.noise = float(noise)
        super().__init__(mean, std)

    def sample_native(self, n, generator):
        y = _randint(2, n, generator)
        theta = math.pi * _rand(n, generator)
        upper = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
        lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
        x = torch.where(y[:, None] == 0, upper, lower)
        return x + self.noise * _randn(n, generator, 2), y


class Circles(Dataset):
    """Two concentric circles, radii 1 (label 0) and ``factor`` (label 1), plus jitter."""

    num_classes = 2

    def __init__(self, factor: float = default(CirclesConfig, "factor"),
                 noise: float = default(CirclesConfig, "noise"),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        check(0 < factor < 1, "dataset.factor", factor, "a number in (0, 1)")
        check(noise >= 0, "dataset.noise", noise, "a number >= 0")
        self.factor, self.noise = float(factor), float(noise)
        super().__init__(mean, std)

    def sample_native(self, n, generator):
        y = _randint(2, n, generator)
        theta = 2 * math.pi * _rand(n, generator)
        radius = torch.where(y == 0, 1.0, self.factor)
        x = radius[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], 1)
        return x + self.noise * _randn(n, generator, 2), y


class EightGaussians(Dataset):
    """Eight isotropic Gaussians (std ``component_std``) evenly spaced on a circle of ``radius``."""

    num_classes = 8

    def __init__(self, radius: float = default(EightGaussiansConfig, "radius"),
                 component_std: float = default(EightGaussiansConfig, "component_std"),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        check(radius > 0, "dataset.radius", radius, "a number > 0")
        check(component_std > 0, "dataset.component_std", component_std, "a number > 0")
        self.radius, self.component_std = float(radius), float(component_std)
        super().__init__(mean, std)

    def sample_native(self, n, generator):
        y = _randint(8, n, generator)
        angle = y.to(torch.float32) * (2 * math.pi / 8)
        centers = self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        return centers + self.component_std * _randn(n, generator, 2), y


class Checkerboard(Dataset):
    """Uniform density on the dark squares of a ``squares`` x ``squares`` board of side ``size``."""

    def __init__(self, squares: int = default(CheckerboardConfig, "squares"),
                 size: float = default(CheckerboardConfig, "size"),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        check(squares >= 2 and squares % 2 == 0, "dataset.squares", squares, "an even int >= 2")
        check(size > 0, "dataset.size", size, "a number > 0")
        self.squares, self.size = int(squares), float(size)
        super().__init__(mean, std)

    def sample_native(self, n, generator):
        k = self.squares
        col = _randint(k, n, generator)
        row = 2 * _randint(k // 2, n, generator) + (col % 2)  # dark squares: row + col even
        cell = torch.stack([col, row], 1).to(torch.float32) + _rand(n, generator, 2)
        return (cell / k - 0.5) * self.size, None


class SwissRoll(Dataset):
    """The 2-D swiss roll ``s (cos s, sin s)``, ``s = 1.5 pi (1 + 2 u)``, plus jitter."""

    def __init__(self, noise: float = default(SwissRollConfig, "noise"),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        check(noise >= 0, "dataset.noise", noise, "a number >= 0")
        self.noise = float(noise)
        super().__init__(mean, std)

    def sample_native(self, n, generator):
        s = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
        x = s[:, None] * torch.stack([torch.cos(s), torch.sin(s)], 1)
        return x + self.noise * _randn(n, generator, 2), None


class Spirals(Dataset):
    """Two interleaved Archimedean spirals (labels 0, 1) of ``turns`` turns, plus jitter."""

    num_classes = 2

    def __init__(self, turns: float = default(SpiralsConfig, "turns"),
                 noise: float = default(SpiralsConfig, "noise"),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        check(turns > 0, "dataset.turns", turns, "a number > 0")
        check(noise >= 0, "dataset.noise", noise, "a number >= 0")
        self.turns, self.noise = float(turns), float(noise)
        super().__init__(mean, std)

    def sample_native(self, n, generator):
        y = _randint(2, n, generator)
        # sqrt of a uniform spreads points evenly along the arc length (roughly)
        s = torch.sqrt(_rand(n, generator)) * (2 * math.pi * self.turns)
        sign = 1.0 - 2.0 * y.to(torch.float32)
        x = sign[:, None] * s[:, None] * torch.stack([-torch.cos(s), torch.sin(s)], 1)
        return x + self.noise * _randn(n, generator, 2), y
