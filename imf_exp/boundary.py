"""Where the instantaneous velocity ``v_theta(z, t)`` comes from: one decision, read by both the
model (does it grow an auxiliary head?) and the objective (is there an extra loss term?)."""

from __future__ import annotations

from dataclasses import dataclass

from imf_exp.config import AuxHeadBoundaryConfig, default
from imf_exp.errors import check


@dataclass(frozen=True)
class BoundaryMode:
    """``aux_head=False`` (``shared``): ``v_theta(z, t) = u_theta(z, t, t)``, no extra term.

    ``aux_head=True``: an auxiliary head on the same trunk predicts ``v_theta(z, t)`` and adds
    ``aux_weight * metric(v_theta - v_target)`` to the loss; one-step sampling never uses it.
    """

    aux_head: bool = False
    aux_weight: float = default(AuxHeadBoundaryConfig, "aux_weight")

    def __post_init__(self) -> None:
        check(self.aux_weight >= 0, "boundary_mode.aux_weight", self.aux_weight, "a number >= 0")
