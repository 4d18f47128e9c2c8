"""Samplers. Time runs from noise (``t = 1``) down to data (``t = 0``).

* Average velocity, ``k`` NFE: ``t_i = 1 - i/k``,
  ``z_{t_{i+1}} = z_{t_i} - (t_i - t_{i+1}) u(z_{t_i}, r=t_{i+1}, t=t_i)``.
  One step: ``x = z_1 - u(z_1, r=0, t=1)``.
* ODE on the instantaneous velocity ``v(z, t)``: Euler or midpoint with ``k`` uniform steps
  (``k`` or ``2k`` NFE).

A guided model (``guidance=cfg``) takes ``cond`` (labels, ``omega``, interval; see
:class:`imf_exp.objectives.guidance.Condition`): the average-velocity sampler passes it as it is
(the network knows the interval, still one evaluation per step); the ODE uses the velocity at
``omega`` inside the interval and at ``omega = 1`` outside it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from imf_exp.errors import check

ODE_METHODS = ("euler", "midpoint")


def full_time(z: torch.Tensor, value: float) -> torch.Tensor:
    """A time ``(B,)`` of ``value`` for the batch ``z``, on its device and dtype."""
    return torch.full((z.shape[0],), value, device=z.device, dtype=z.dtype)


def _cond_kwargs(cond) -> dict:
    return {} if cond is None else {"cond": cond}


@torch.no_grad()
def sample_average(model: nn.Module, z1: torch.Tensor, nfe: int = 1, cond=None) -> torch.Tensor:
    """Integrate from ``z1`` (noise) to data with ``nfe`` average-velocity jumps."""
    check(nfe >= 1, "nfe", nfe, "an int >= 1")
    z, kw = z1, _cond_kwargs(cond)
    for i in range(nfe):
        t_hi, t_lo = 1.0 - i / nfe, 1.0 - (i + 1) / nfe
        z = z - (t_hi - t_lo) * model(z, full_time(z, t_lo), full_time(z, t_hi), **kw)
    return z


def guided_velocity_fn(model: nn.Module, cond=None) -> Callable:
    """``v(z, t)`` of the guided flow: ``omega`` inside the condition's interval, 1 outside."""
    if cond is None:
        return model.velocity

    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model.velocity(z, t, cond._replace(omega=cond.effective_omega(t)))

    return velocity


@torch.no_grad()
def sample_ode(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z1: torch.Tensor,
               steps: int = 100, method: str = "euler") -> torch.Tensor:
    """Integrate ``dz/dt = v(z, t)`` from ``t = 1`` to ``t = 0`` with ``steps`` uniform steps."""
    check(steps >= 1, "steps", steps, "an int >= 1")
    check(method in ODE_METHODS, "method", method, f"one of {list(ODE_METHODS)}")
    z, h = z1, 1.0 / steps
    for i in range(steps):
        t = 1.0 - i * h
        v = velocity(z, full_time(z, t))
        if method == "midpoint":
            v = velocity(z - 0.5 * h * v, full_time(z, t - 0.5 * h))
        z = z - h * v
    return z


def generate(model: nn.Module, z1: torch.Tensor, kind: str, steps: int,
             method: str = "euler", cond=None) -> torch.Tensor:
    """``kind="average"``: ``steps``-NFE average-velocity sampling; ``"ode"``: ODE on ``v``."""
    if kind == "average":
        return sample_average(model, z1, steps, cond)
    if kind == "ode":
        return sample_ode(guided_velocity_fn(model, cond), z1, steps, method)
    raise ValueError(f"sampling kind must be 'average' or 'ode'; got {kind!r}")
