"""Guidance as conditioning (config group ``guidance``: ``none``, ``cfg``).

Classifier-free guidance baked into the network, as in iMF: the model sees, besides ``(z, r, t)``,
a class label ``c`` (``K`` is the null label), the guidance scale ``omega`` and the CFG interval
``[t_lo, t_hi]``. Training draws them per example:

* ``c`` is replaced by the null label ``K`` with probability ``p_drop``;
* ``omega`` on ``[1, omega_max]`` with density proportional to ``omega^(-beta)``
  (``beta = 1``: ``omega = omega_max ** U(0, 1)``);
* ``t_lo ~ U(t_lo_range)``, ``t_hi ~ U(t_hi_range)``; examples with ``r = t`` (the flow-matching
  part of the batch) get the whole interval ``[0, 1]``.

The guided velocity target at time ``t``, with ``w = omega`` inside ``[t_lo, t_hi]`` and ``w = 1``
outside, is ::

    v_g = v + (1 - 1/w) (v_c - v_u),
    v_c = sg(v_theta(z, t | c, w)),   v_u = sg(v_theta(z, t | null, w)),

and the JVP tangent is ``v_c`` (the velocity of the guided flow the average velocity integrates).
At a fixed point ``v_theta(z, t | c, w) = v_u + w (v_cond - v_u)``: ordinary CFG, one network
evaluation per step at sampling time. The instantaneous velocity ``v_theta(z, t | c, w)`` is always
queried with the interval ``[0, 1]`` (the guided velocity at scale ``w``); only the average
velocity ``u(z, r, t | c, omega, t_lo, t_hi)`` needs the interval, because a jump from ``t`` to
``r`` may cross it.

Differences from the official iMF code (JAX), which are equivalent at the fixed point: it queries
``v_u`` with ``omega = 1`` and computes the tangent ``v_c`` with the label *before* label dropout;
here dropped examples use the null label for their tangent too (the velocity of the flow they train).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from imf_exp.condition import Condition
from imf_exp.config import CFGConfig, default
from imf_exp.errors import ConfigError, check

__all__ = ["CFG", "Condition", "Guidance", "NoGuidance", "guided_velocity"]


class Guidance:
    """``guidance=none``: no labels, no extra inputs, plain velocity targets."""

    enabled: bool = False
    eval_omega: tuple[float, ...] = (1.0,)
    eval_interval: tuple[float, float] = (0.0, 1.0)

    def check_dataset(self, num_classes: int, name: str) -> None:
        """Raises when the dataset cannot be guided."""

    def condition(self, labels, r: torch.Tensor, t: torch.Tensor, gen: torch.Generator):
        """Training conditioning for a batch (None: unconditional)."""
        return None


class NoGuidance(Guidance):
    pass


class CFG(Guidance):
    """Classifier-free guidance as conditioning (see the module docstring for the math).

    ``eval_omega``: the scales evaluation samples at (the first one gives the run's primary
    metric); ``eval_interval``: the interval used at evaluation.
    """

    enabled = True

    def __init__(self, p_drop: float = default(CFGConfig, "p_drop"),
                 omega_max: float = default(CFGConfig, "omega_max"),
                 beta: float = default(CFGConfig, "beta"),
                 t_lo_range: Sequence[float] = default(CFGConfig, "t_lo_range"),
                 t_hi_range: Sequence[float] = default(CFGConfig, "t_hi_range"),
                 eval_omega: Sequence[float] = default(CFGConfig, "eval_omega"),
                 eval_interval: Sequence[float] = default(CFGConfig, "eval_interval")) -> None:
        check(0.0 <= p_drop < 1.0, "guidance.p_drop", p_drop, "a number in [0, 1)")
        check(omega_max >= 1.0, "guidance.omega_max", omega_max, "a number >= 1")
        check(beta >= 0.0, "guidance.beta", beta, "a number >= 0")
        for key, rng in (("guidance.t_lo_range", t_lo_range), ("guidance.t_hi_range", t_hi_range)):
            check(len(rng) == 2 and 0.0 <= rng[0] <= rng[1] <= 1.0, key, list(rng),
                  "[a, b] with 0 <= a <= b <= 1")
        check(t_lo_range[1] <= t_hi_range[0], "guidance.t_lo_range", list(t_lo_range),
              f"a range that ends at or before t_hi_range starts ({t_hi_range[0]})")
        check(len(eval_omega) >= 1 and all(w >= 1 for w in eval_omega), "guidance.eval_omega",
              list(eval_omega), "a non-empty list of numbers >= 1")
        check(len(eval_interval) == 2 and 0.0 <= eval_interval[0] <= eval_interval[1] <= 1.0,
              "guidance.eval_interval", list(eval_interval), "[t_lo, t_hi] with 0 <= t_lo <= t_hi <= 1")
        self.p_drop, self.omega_max, self.beta = float(p_drop), float(omega_max), float(beta)
        self.t_lo_range = tuple(float(v) for v in t_lo_range)
        self.t_hi_range = tuple(float(v) for v in t_hi_range)
        self.eval_omega = tuple(float(w) for w in eval_omega)
        self.eval_interval = (float(eval_interval[0]), float(eval_interval[1]))
        self.num_classes = 0

    def check_dataset(self, num_classes: int, name: str) -> None:
        if num_classes < 1:
            raise ConfigError(f"guidance=cfg needs class labels, but dataset {name} has none "
                              "(labelled: moons, circles, eight_gaussians, spirals, digits; a "
                              "custom dataset needs an int attribute num_classes and sample() "
                              "returning (x, labels)); use guidance=none")
        self.num_classes = int(num_classes)

    def sample_omega(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``omega`` on ``[1, omega_max]`` with density ``~ omega^(-beta)`` (inverse CDF)."""
        u = torch.rand(n, generator=gen, device=gen.device)
        if self.omega_max == 1.0:
            return torch.ones_like(u)
        if abs(self.beta - 1.0) < 1e-12:
            return self.omega_max ** u
        a = 1.0 - self.beta
        return (1.0 + u * (self.omega_max ** a - 1.0)) ** (1.0 / a)

    def omega_density(self, omega: torch.Tensor) -> torch.Tensor:
        """The normalized density of :meth:`sample_omega` (for tests)."""
        if abs(self.beta - 1.0) < 1e-12:
            norm = math.log(self.omega_max)
        else:
            norm = (self.omega_max ** (1 - self.beta) - 1) / (1 - self.beta)
        return omega ** (-self.beta) / norm

    def condition(self, labels, r, t, gen):
        if labels is None:
            raise ConfigError("guidance=cfg: the dataset returned no labels")
        n, dev = t.shape[0], t.device
        drop = torch.rand(n, generator=gen, device=dev) < self.p_drop
        labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        omega = self.sample_omega(n, gen)
        lo0, lo1 = self.t_lo_range
        hi0, hi1 = self.t_hi_range
        t_lo = lo0 + (lo1 - lo0) * torch.rand(n, generator=gen, device=dev)
        t_hi = hi0 + (hi1 - hi0) * torch.rand(n, generator=gen, device=dev)
        boundary = r == t  # flow-matching examples: the whole interval
        t_lo = torch.where(boundary, torch.zeros_like(t_lo), t_lo)
        t_hi = torch.where(boundary, torch.ones_like(t_hi), t_hi)
        return Condition(labels, omega.to(t.dtype), t_lo.to(t.dtype), t_hi.to(t.dtype))


def guided_velocity(model, z: torch.Tensor, t: torch.Tensor, v: torch.Tensor,
                    cond: Condition | None, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(v_g, v_c)``: the guided target (detached) and the conditional velocity.

    ``v_c = v_theta(z, t | c, w)`` keeps its graph when ``grad`` (the auxiliary head's term
    trains it); ``v_u`` is computed without a graph; the null label is ``model.num_classes``.
    With ``cond=None`` the target is ``v`` itself and ``v_c`` is ``v_theta(z, t)`` with its graph
    when ``grad``, else None (not needed).
    """
    if cond is None:
        return v, (model.velocity(z, t) if grad else None)
    w = cond.effective_omega(t)
    c_query = cond._replace(omega=w)  # model.velocity sets the interval to [0, 1]
    u_query = c_query._replace(labels=torch.full_like(cond.labels, model.num_classes))
    if grad:
        v_c = model.velocity(z, t, c_query)
        with torch.no_grad():
            v_u = model.velocity(z, t, u_query)
    else:
        with torch.no_grad():
            both = model.velocity(torch.cat([z, z]), torch.cat([t, t]), c_query.cat(u_query))
        v_c, v_u = both.chunk(2)
    v_g = v + (1.0 - 1.0 / w)[:, None] * (v_c.detach() - v_u)
    return v_g.detach(), v_c
