"""Flow matching: the multi-step quality reference, sampled with an ODE solver."""

from __future__ import annotations

from imf_exp.objectives.base import Objective, interpolate


class FlowMatching(Objective):
    """``loss = metric(v_theta(z, t) - (e - x))``; ``r`` is ignored."""

    sampling = "ode"

    def __call__(self, model, x, e, r, t, boundary):
        z, v = interpolate(x, e, t)
        loss = self.metric(model.velocity(z, t) - v)
        return loss, {"loss": loss.detach(), "loss_v": loss.detach()}
