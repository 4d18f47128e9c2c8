"""Original MeanFlow: regress ``u`` onto a stop-gradient target built with the conditional velocity."""

from __future__ import annotations

from imf_exp.objectives.base import Objective, interpolate, total_derivative
from imf_exp.objectives.guidance import guided_velocity


class MeanFlow(Objective):
    """``u_tgt = v - (t - r) jvp(u_theta, (z, r, t), (v, 0, 1))`` with ``v = e - x`` (or the guided
    ``v_g`` when ``cond`` is given); ``loss = metric(u - stopgrad(u_tgt))``. In ``aux_head`` mode
    the auxiliary head is also trained by flow matching with weight ``aux_weight`` (it plays no
    part in the target)."""

    sampling = "average"

    def __call__(self, model, x, e, r, t, boundary, cond=None):
        z, v = interpolate(x, e, t)
        v_tgt, v_theta = guided_velocity(model, z, t, v, cond, grad=boundary.aux_head)
        u, dudt = total_derivative(model, z, r, t, v_tgt, cond)
        target = v_tgt - (t - r)[:, None] * dudt
        return self.total(u - target.detach(), boundary, v_theta, v_tgt)
