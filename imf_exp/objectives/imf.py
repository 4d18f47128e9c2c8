"""Improved MeanFlow: regress the compound prediction ``V`` onto the velocity target."""

from __future__ import annotations

import torch

from imf_exp.objectives.base import Objective, interpolate, total_derivative
from imf_exp.objectives.guidance import guided_velocity


def compound_velocity(model, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                      tangent: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``V = u + (t - r) stopgrad(du/dt)`` with ``du/dt`` along ``tangent``; returns ``(V, u)``."""
    u, dudt = total_derivative(model, z, r, t, tangent, cond)
    return u + (t - r)[:, None] * dudt, u


class IMF(Objective):
    """iMF objective.

    1. ``z = (1-t) x + t e``, ``v_tgt = e - x`` (or the guided ``v_g`` when ``cond`` is given);
    2. ``v_theta = model.velocity(z, t)`` (detached as the JVP tangent);
    3. ``(u, du/dt) = jvp(u_theta, (z, r, t), (v_theta, 0, 1))``;
    4. ``V = u + (t - r) stopgrad(du/dt)``;
    5. ``loss = metric(V - v_tgt) [+ aux_weight * metric(v_theta - v_tgt)]`` (``aux_head`` mode).
    """

    sampling = "average"

    def __call__(self, model, x, e, r, t, boundary, cond=None):
        z, v = interpolate(x, e, t)
        v_tgt, v_theta = guided_velocity(model, z, t, v, cond, grad=boundary.aux_head)
        if v_theta is None:  # shared network, no guidance: the tangent needs no graph
            with torch.no_grad():
                v_theta = model.velocity(z, t)
        compound, _ = compound_velocity(model, z, r, t, v_theta.detach(), cond)
        return self.total(compound - v_tgt, boundary, v_theta, v_tgt)
