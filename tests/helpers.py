"""Test-only datasets loaded through ``dataset=custom dataset._target_=tests.helpers.X``."""

import torch

from imf_exp.data import Circles


class NaNCircles(Circles):
    """Circles whose training draws (size ``batch``) number ``first``..``last`` (1-based) are NaN."""

    def __init__(self, first: int = 100, last: int = 10**9, batch: int = 256, **kwargs) -> None:
        self.first, self.last, self.batch, self.calls = first, last, batch, 0
        super().__init__(**kwargs)  # may draw reference statistics (not of size `batch`)

    def sample_native(self, n, generator):
        x, y = super().sample_native(n, generator)
        if n == self.batch:
            self.calls += 1
            if self.first <= self.calls <= self.last:
                x = torch.full_like(x, float("nan"))
        return x, y
