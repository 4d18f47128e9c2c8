"""Average-velocity networks ``u(z, r, t)`` with an optional auxiliary ``v`` head."""

from imf_exp.models.base import AverageVelocityModel
from imf_exp.models.embeddings import ScalarEmbedding, TimeFeatures, time_scalars
from imf_exp.models.mlp import MLP
from imf_exp.models.resmlp import ResMLP

__all__ = ["AverageVelocityModel", "MLP", "ResMLP", "ScalarEmbedding", "TimeFeatures", "time_scalars"]
