"""Flow matching: the multi-step quality reference, sampled with an ODE solver."""

from __future__ import annotations

from imf_exp.config import FlowMatchingConfig, default
from imf_exp.objectives.base import Objective, interpolate
from imf_exp.objectives.guidance import guided_velocity


class FlowMatching(Objective):
    """``loss = metric(v_theta(z, t) - (e - x))`` (or ``- v_g``, guided); ``r`` is ignored."""

    sampling = "ode"

    def __init__(self, norm_p: float = default(FlowMatchingConfig, "norm_p"),
                 norm_eps: float = default(FlowMatchingConfig, "norm_eps")) -> None:
        super().__init__(norm_p, norm_eps)

    def __call__(self, model, x, e, r, t, boundary, cond=None):
        z, v = interpolate(x, e, t)
        v_tgt, v_theta = guided_velocity(model, z, t, v, cond, grad=True)
        logs = {}
        loss = self.term("v", v_theta - v_tgt, logs)
        logs["loss"] = loss.detach()
        return loss, logs
