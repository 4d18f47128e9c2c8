"""scikit-learn's 8x8 handwritten digits: a 64-dimensional, 10-class dataset (no download).

1797 images with integer pixels in ``[0, 16]``. A fixed split (``split_seed``) holds out
``holdout`` images for evaluation; training draws from the rest (with replacement). Pixels are
standardized with the fixed ``mean = 8``, ``std = 8`` (``[0, 16] -> [-1, 1]``, as images usually
are), not per pixel: a few border pixels are zero in almost every image. ``jitter > 0`` adds
uniform dequantization noise of that width (pixel units) to training draws.

Evaluation uses the held-out images as the reference set, and a random subset of the training
images of the same size for the floor (see :meth:`eval_reference`, :meth:`floor_pair`); a
classifier trained on :meth:`labelled_train` scores the samples (``imf_exp.metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from imf_exp.config import DigitsConfig, default
from imf_exp.data.base import Dataset
from imf_exp.errors import check

N_IMAGES = 1797


@lru_cache(maxsize=4)
def _split(split_seed: int, holdout: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    perm = np.random.default_rng(split_seed).permutation(len(data.target))
    x = torch.tensor(data.data[perm], dtype=torch.float32)
    y = torch.tensor(data.target[perm], dtype=torch.long)
    return x[holdout:], y[holdout:], x[:holdout], y[:holdout]


class Digits(Dataset):
    """8x8 digits (labels 0..9) in native pixel units ``[0, 16]``."""

    dim = 64
    num_classes = 10

    def __init__(self, holdout: int = default(DigitsConfig, "holdout"),
                 jitter: float = default(DigitsConfig, "jitter"),
                 split_seed: int = default(DigitsConfig, "split_seed"),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        check(100 <= holdout <= N_IMAGES - 500, "dataset.holdout", holdout,
              f"an int in [100, {N_IMAGES - 500}]")
        check(jitter >= 0, "dataset.jitter", jitter, "a number >= 0 (pixel units)")
        self.holdout, self.jitter, self.split_seed = int(holdout), float(jitter), int(split_seed)
        self.train_x, self.train_y, self.test_x, self.test_y = _split(self.split_seed, self.holdout)
        self._train_copies: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__([8.0] * 64 if mean is None else mean, [8.0] * 64 if std is None else std)

    def _train_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split on ``device`` (copied once), so a draw never leaves the device."""
        if device not in self._train_copies:
            self._train_copies[device] = (self.train_x.to(device), self.train_y.to(device))
        return self._train_copies[device]

    def sample_native(self, n, generator):
        dev = generator.device
        train_x, train_y = self._train_on(dev)
        idx = torch.randint(0, len(train_y), (n,), generator=generator, device=dev)
        x, y = train_x[idx], train_y[idx]
        if self.jitter > 0:
            x = x + self.jitter * (torch.rand(x.shape, generator=generator, device=dev) - 0.5)
        return x, y

    def eval_reference(self, n, generator):
        """The first ``min(n, holdout)`` held-out images (standardized) and their labels."""
        n = min(n, self.holdout)
        return self.standardize(self.test_x[:n]), self.test_y[:n]

    def floor_pair(self, n, generator):
        """A random subset of ``n`` distinct training images, and the held-out reference."""
        n = min(n, self.holdout)
        idx = torch.randperm(len(self.train_y), generator=generator)[:n]
        return self.standardize(self.train_x[idx]), self.standardize(self.test_x[:n])

    def labelled_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All training images (standardized) and labels: what the evaluation classifier learns."""
        return self.standardize(self.train_x), self.train_y

    @property
    def probe_key(self) -> tuple:
        """What the evaluation classifier depends on (split and standardization): evaluators
        that share it share one classifier (see :func:`imf_exp.metrics.classifier_probe`)."""
        return ("digits", self.split_seed, self.holdout, tuple(self.mean.tolist()),
                tuple(self.std.tolist()))
