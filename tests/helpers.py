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


def imf_loss_case(model, n: int = 32, seed: int = 0):
    """A fixed batch for ``model`` (half of it ``r = t``) and the iMF loss (shared boundary) on it:
    ``(loss_fn, loss_and_grads)``, where ``loss_and_grads(fn)`` runs ``fn`` (the loss itself or
    a compiled copy) and returns the detached loss and a copy of every parameter's gradient."""
    from imf_exp.boundary import BoundaryMode
    from imf_exp.objectives import IMF

    gen = torch.Generator().manual_seed(seed)
    x, e = torch.randn(n, 2, generator=gen), torch.randn(n, 2, generator=gen)
    t = torch.rand(n, generator=gen)
    r = torch.where(torch.rand(n, generator=gen) < 0.5, t, t * torch.rand(n, generator=gen))
    objective, boundary = IMF(), BoundaryMode()

    def loss_fn(x, e, r, t):
        return objective(model, x, e, r, t, boundary)

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss, _ = fn(x, e, r, t)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    return loss_fn, loss_and_grads


class NoiseStd:
    """A custom sampler with an attribute ``std`` that is not a standardization (a noise level)."""

    dim = 2

    def __init__(self, std: float = 0.1) -> None:
        self.std = std

    def sample(self, n, generator):
        return torch.randn(n, 2, generator=generator) * self.std + 3.0


class Bad:
    """A custom sampler that does one thing wrong, chosen by ``what``."""

    dim = 2

    def __init__(self, what: str = "dim") -> None:
        self.what = what
        if what == "dim":
            self.dim = "two"
        if what in ("labels", "no_labels"):
            self.num_classes = 2

    def sample(self, n, generator):
        x = torch.randn(n, 2, generator=generator)
        if self.what == "boom":
            raise ValueError("boom")
        if self.what == "shape":
            return x[:, :1]
        if self.what == "nonfinite":
            return torch.full_like(x, float("nan"))
        if self.what == "labels":
            return x, torch.full((n,), 5)
        return x


class CpuNumpy:
    """A custom sampler that draws on the CPU whatever the generator's device and returns numpy:
    accepted (moved to the generator's device)."""

    dim = 2
    num_classes = 2

    def sample(self, n, generator):
        import numpy as np

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, n)
        return rng.normal(size=(n, 2)) + 3 * y[:, None], y
