"""Objectives: pure functions of ``(model, x, noise, r, t)`` returning ``(loss, logs)``.

All share the interpolation ``z_t = (1 - t) x + t e`` (``t = 0`` data, ``t = 1`` noise), the
conditional velocity ``v = e - x`` and the adaptive metric. ``logs`` holds detached scalar
tensors (no host sync); the trainer decides when to read them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.func import jvp

from imf_exp.boundary import BoundaryMode
from imf_exp.config import IMFConfig, default
from imf_exp.errors import check
from imf_exp.objectives.weighting import adaptive_metric, squared_error, weighted_mean

Logs = dict[str, torch.Tensor]


def interpolate(x: torch.Tensor, e: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z_t = (1 - t) x + t e`` and the conditional velocity ``v = e - x``."""
    tb = t.view(-1, *([1] * (x.dim() - 1)))
    return (1 - tb) * x + tb * e, e - x


def total_derivative(model: nn.Module, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                     v: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, du/dt)`` at ``(z, r, t)`` along the trajectory ``dz/dt = v``, ``r`` held fixed.

    One batched forward-mode JVP with primals ``(z, t)`` and tangents ``(v, 1)``: the tangent
    of ``r`` is zero, so ``r`` is closed over instead of paying for a zero tangent (as is the
    guidance condition ``cond``, constant along the trajectory).
    ``u`` keeps its graph to the parameters; ``du/dt`` is returned detached.
    """
    u, dudt = jvp(lambda z_, t_: model(z_, r, t_, cond), (z, t), (v, torch.ones_like(t)))
    return u, dudt.detach()


class Objective(ABC):
    """Holds the metric's ``norm_p`` (``p``) and ``norm_eps`` (``c``)."""

    #: how evaluation samples a model trained with this objective:
    #: ``"average"`` (k-NFE average-velocity steps) or ``"ode"`` (ODE on ``v``)
    sampling: str = "average"

    def __init__(self, norm_p: float = default(IMFConfig, "norm_p"),
                 norm_eps: float = default(IMFConfig, "norm_eps")) -> None:
        check(norm_p >= 0, "objective.norm_p", norm_p, "a number >= 0")
        check(norm_eps > 0, "objective.norm_eps", norm_eps, "a number > 0")
        self.norm_p, self.norm_eps = float(norm_p), float(norm_eps)

    def metric(self, delta: torch.Tensor) -> torch.Tensor:
        return adaptive_metric(delta, self.norm_p, self.norm_eps)

    def term(self, name: str, delta: torch.Tensor, logs: Logs) -> torch.Tensor:
        """``metric(delta)``, logged as ``loss_<name>`` beside the unweighted error
        ``err_<name> = mean_i |delta_i|^2`` (what the weighting with ``p > 0`` rescales)."""
        sq = squared_error(delta)
        loss = weighted_mean(sq, self.norm_p, self.norm_eps)
        logs[f"loss_{name}"] = loss.detach()
        logs[f"err_{name}"] = sq.detach().mean()
        return loss

    def total(self, delta_u: torch.Tensor, boundary: BoundaryMode, v_theta: torch.Tensor | None,
              v_tgt: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        """The loss of the average-velocity objectives: the ``u`` term on ``delta_u``, plus
        ``aux_weight * metric(v_theta - v_tgt)`` in ``aux_head`` mode (the auxiliary head's own
        flow-matching term); with the detached logs of each term."""
        logs: Logs = {}
        loss = self.term("u", delta_u, logs)
        if boundary.aux_head:
            loss = loss + boundary.aux_weight * self.term("v", v_theta - v_tgt, logs)
        logs["loss"] = loss.detach()
        return loss, logs

    @abstractmethod
    def __call__(self, model: nn.Module, x: torch.Tensor, e: torch.Tensor, r: torch.Tensor,
                 t: torch.Tensor, boundary: BoundaryMode, cond=None) -> tuple[torch.Tensor, Logs]:
        """Loss (scalar with graph) and detached logs for one batch.

        ``cond`` (a :class:`imf_exp.objectives.guidance.Condition` or None) turns the velocity
        target into the guided one, ``v_g`` (see ``guidance.py``).
        """


