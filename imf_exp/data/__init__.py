"""Datasets: native samplers with a fixed standardization (see :mod:`imf_exp.data.base`)."""

from imf_exp.data.base import Dataset, as_dataset, check_samples
from imf_exp.data.digits import Digits
from imf_exp.data.toy2d import Checkerboard, Circles, EightGaussians, Moons, Spirals, SwissRoll

__all__ = [
    "Dataset", "as_dataset", "check_samples", "Moons", "Circles", "EightGaussians", "Checkerboard",
    "SwissRoll", "Spirals", "Digits",
]
