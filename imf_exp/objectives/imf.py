"""Improved MeanFlow: regress the compound prediction ``V`` onto the velocity target."""

from __future__ import annotations

import torch

from imf_exp.objectives.base import Objective, interpolate, total_derivative


def compound_velocity(model, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                      tangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``V = u + (t - r) stopgrad(du/dt)`` with ``du/dt`` along ``tangent``; returns ``(V, u)``."""
    u, dudt = total_derivative(model, z, r, t, tangent)
    return u + (t - r)[:, None] * dudt, u


class IMF(Objective):
    """iMF objective.

    1. ``z = (1-t) x + t e``, ``v_tgt = e - x``;
    2. ``v_theta = model.velocity(z, t)`` (detached as the JVP tangent);
    3. ``(u, du/dt) = jvp(u_theta, (z, r, t), (v_theta, 0, 1))``;
    4. ``V = u + (t - r) stopgrad(du/dt)``;
    5. ``loss = metric(V - v_tgt) [+ aux_weight * metric(v_theta - v_tgt)]`` (``aux_head`` mode).
    """

    sampling = "average"

    def __call__(self, model, x, e, r, t, boundary):
        z, v_tgt = interpolate(x, e, t)
        if boundary.aux_head:
            v_theta = model.velocity(z, t)
            tangent = v_theta.detach()
        else:
            with torch.no_grad():
                tangent = model.velocity(z, t)
        compound, _ = compound_velocity(model, z, r, t, tangent)
        loss_u = self.metric(compound - v_tgt)
        logs = {"loss_u": loss_u.detach()}
        loss = loss_u
        if boundary.aux_head:
            loss_v = self.metric(v_theta - v_tgt)
            logs["loss_v"] = loss_v.detach()
            loss = loss + boundary.aux_weight * loss_v
        logs["loss"] = loss.detach()
        return loss, logs
