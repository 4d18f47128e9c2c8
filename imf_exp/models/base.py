"""The average-velocity network interface.

A model maps ``(z, r, t)`` with ``z: (B, dim)``, ``r, t: (B,)`` and ``0 <= r <= t <= 1`` to the
average velocity ``u(z, r, t): (B, dim)``; ``z_r = z_t - (t - r) u(z_t, r, t)``.
Its instantaneous velocity ``v(z, t)`` is ``u(z, t, t)`` (boundary mode ``shared``) or an
auxiliary head on the same trunk evaluated at ``r = t`` (boundary mode ``aux_head``).
With guidance (``num_classes > 0``) both also take a condition ``(label, omega, t_lo, t_hi)``
(see ``imf_exp/objectives/guidance.py``), embedded beside the time features; ``cond=None`` on
such a model means unconditional: the null label, ``omega = 1``, interval ``[0, 1]``.
Subclasses implement :meth:`features` (the trunk) and get both heads from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from imf_exp.condition import Condition
from imf_exp.config import MLPConfig, default
from imf_exp.errors import ConfigError, check
from imf_exp.models.embeddings import ConditionFeatures, TimeFeatures

ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh,
               "softplus": nn.Softplus}


def make_activation(name: str) -> nn.Module:
    check(name in ACTIVATIONS, "model.activation", name, f"one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class AverageVelocityModel(nn.Module, ABC):
    """Base: time features, an output head for ``u`` and an optional auxiliary ``v`` head."""

    def __init__(self, dim: int, width: int, depth: int,
                 activation: str = default(MLPConfig, "activation"),
                 time_input: str = default(MLPConfig, "time_input"),
                 embedding: str = default(MLPConfig, "embedding"),
                 embedding_dim: int = default(MLPConfig, "embedding_dim"),
                 embedding_scale: float = default(MLPConfig, "embedding_scale"),
                 max_period: float = default(MLPConfig, "max_period"), input_fourier: int = 0,
                 input_fourier_scale: float = default(MLPConfig, "input_fourier_scale"),
                 aux_head: bool = False, num_classes: int = 0) -> None:
        super().__init__()
        check(isinstance(dim, int) and dim >= 1, "model.dim", dim, "an int >= 1 (set by the dataset)")
        check(width >= 1, "model.width", width, "an int >= 1")
        check(depth >= 1, "model.depth", depth, "an int >= 1")
        self.dim, self.width, self.depth, self.act_name = dim, width, depth, activation
        make_activation(activation)  # validates the name before any work
        self.time = TimeFeatures(time_input, embedding, embedding_dim, embedding_scale, max_period)
        check(num_classes >= 0, "num_classes", num_classes, "an int >= 0 (0: unconditional)")
        self.num_classes = int(num_classes)
        self.condition = (ConditionFeatures(num_classes, embedding, embedding_dim, embedding_scale,
                                            max_period) if num_classes else None)
        #: width of everything the trunk is conditioned on (time, and guidance inputs if any)
        self.cond_dim = self.time.out_dim + (self.condition.out_dim if self.condition else 0)
        check(input_fourier >= 0, "model.input_fourier", input_fourier, "an int >= 0 (0: off)")
        check(input_fourier_scale > 0, "model.input_fourier_scale", input_fourier_scale, "a number > 0")
        # random Fourier features of z (Tancik et al. 2020): [z, cos(2 pi B z), sin(2 pi B z)]
        self.register_buffer("input_freqs", 2 * torch.pi * input_fourier_scale
                             * torch.randn(dim, input_fourier))
        self.in_dim = dim + 2 * input_fourier
        self.has_aux_head = bool(aux_head)
        self.u_head = nn.Linear(width, dim)
        self.v_head = nn.Linear(width, dim) if aux_head else None

    @abstractmethod
    def features(self, z: torch.Tensor, time_features: torch.Tensor) -> torch.Tensor:
        """The trunk: ``(B, in_dim), (B, cond_dim) -> (B, width)``; ``z`` after :meth:`lift`."""

    def lift(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` with its random Fourier features appended (``z`` itself when they are off)."""
        if self.input_freqs.shape[1] == 0:
            return z
        angle = z @ self.input_freqs
        return torch.cat([z, torch.cos(angle), torch.sin(angle)], dim=-1)

    def _check(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ConfigError(f"model expects z of shape (B, {self.dim}); got {tuple(z.shape)}")
        if r.shape != (z.shape[0],) or t.shape != (z.shape[0],):
            raise ConfigError(
                f"model expects r and t of shape ({z.shape[0]},); got {tuple(r.shape)} and {tuple(t.shape)}"
            )

    def conditioning(self, r: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
                     ) -> torch.Tensor:
        """Time features, and the guidance features when the model is conditional."""
        feats = self.time(r, t)
        if self.condition is None:
            if cond is not None:
                raise ConfigError("this model is unconditional (guidance=none) but got a condition")
            return feats
        if cond is None:  # unconditional query of a conditional model
            cond = Condition.null(t, self.num_classes)
        return torch.cat([feats, self.condition(cond)], dim=-1)

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        """Average velocity ``u(z, r, t)`` (given the guidance condition ``cond``, if any)."""
        self._check(z, r, t)
        return self.u_head(self.features(self.lift(z), self.conditioning(r, t, cond)))

    def velocity(self, z: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        """Instantaneous velocity ``v(z, t)``: ``u(z, t, t)`` or the auxiliary head at ``r = t``.

        A guidance condition is queried with its interval set to ``[0, 1]``.
        """
        if cond is not None:
            cond = cond.velocity_condition()
        if self.v_head is None:
            return self.forward(z, t, t, cond)
        self._check(z, t, t)
        return self.v_head(self.features(self.lift(z), self.conditioning(t, t, cond)))
