"""The metric with adaptive weighting (MeanFlow's ``norm_p``, ``norm_eps``)."""

from __future__ import annotations

import torch


def squared_error(delta: torch.Tensor) -> torch.Tensor:
    """``L_i = sum_d delta_id^2``, one value per example."""
    return delta.pow(2).flatten(1).sum(1)


def weighted_mean(sq: torch.Tensor, p: float, c: float) -> torch.Tensor:
    """``mean_i L_i / stopgrad((L_i + c)^p)``; ``p = 0`` is the plain mean."""
    if p == 0:
        return sq.mean()
    weight = (sq.detach() + c).pow(-p)
    return (sq * weight).mean()


def adaptive_metric(delta: torch.Tensor, p: float, c: float) -> torch.Tensor:
    """``mean_i L_i / stopgrad((L_i + c)^p)`` with ``L_i = sum_d delta_id^2``.

    ``p = 0`` is the plain squared error summed over dimensions, averaged over the batch.
    """
    return weighted_mean(squared_error(delta), p, c)
