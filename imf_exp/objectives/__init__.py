"""Training objectives (config group ``objective``)."""

from imf_exp.objectives.base import Objective, interpolate, total_derivative
from imf_exp.objectives.flow_matching import FlowMatching
from imf_exp.objectives.imf import IMF, compound_velocity
from imf_exp.objectives.meanflow import MeanFlow
from imf_exp.objectives.weighting import adaptive_metric

__all__ = ["Objective", "IMF", "MeanFlow", "FlowMatching", "adaptive_metric", "interpolate",
           "total_derivative", "compound_velocity"]
