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
