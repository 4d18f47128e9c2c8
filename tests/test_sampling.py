"""Sampling conventions against a closed-form average velocity (Gaussian data)."""

import torch

from imf_exp.sampling import sample_average, sample_ode

M, S = torch.tensor([2.0, -1.0], dtype=torch.float64), 0.5  # data N(M, S^2 I); noise N(0, I)


def sigma(t):
    return torch.sqrt((1 - t) ** 2 * S**2 + t**2)


def flow(z, t, r):
    """Exact marginal flow map of z_t = (1-t) x + t e from time t to time r."""
    t, r = t[:, None], r[:, None]
    return (1 - r) * M + sigma(r) / sigma(t) * (z - (1 - t) * M)


class Exact(torch.nn.Module):
    """u(z, r, t) = (z_t - z_r) / (t - r); its r -> t limit is the instantaneous velocity."""

    def __init__(self, swap=False):
        super().__init__()
        self.swap = swap
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, r, t):
        if self.swap:  # the design note's bug: called as u(z, r=1, t=0)
            r, t = t, r
        return (z - flow(z, t, r)) / (t - r)[:, None]

    def velocity(self, z, t):
        h = 1e-6
        return (flow(z, t + h, t) - z) / -h  # d z_s / ds at s = t, via the flow from t+h back


def test_one_step_is_exact_with_the_right_argument_order():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4096, 2, generator=g, dtype=torch.float64)
    x = sample_average(Exact(), z1, nfe=1)
    assert torch.allclose(x, M + S * z1, atol=1e-12)  # the exact pushforward of each noise point
    for k in (2, 4):
        assert torch.allclose(sample_average(Exact(), z1, nfe=k), M + S * z1, atol=1e-10)


def test_swapped_arguments_give_wrong_samples():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4096, 2, generator=g, dtype=torch.float64)
    x = sample_average(Exact(swap=True), z1, nfe=1)
    assert (x - (M + S * z1)).abs().mean() > 0.5
    assert (x.mean(0) - M).abs().max() > 0.5 or (x.std(0) - S).abs().max() > 0.2


def test_displacement_rule_between_intermediate_times():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(100, 2, generator=g, dtype=torch.float64)
    t, r = torch.full((100,), 0.8, dtype=torch.float64), torch.full((100,), 0.3, dtype=torch.float64)
    z_r = z - (t - r)[:, None] * Exact()(z, r, t)
    assert torch.allclose(z_r, flow(z, t, r), atol=1e-12)


def test_ode_solvers_converge_to_the_exact_map():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(512, 2, generator=g, dtype=torch.float64)
    exact = M + S * z1
    model = Exact()
    err_euler = (sample_ode(model.velocity, z1, 50, "euler") - exact).abs().max()
    err_mid = (sample_ode(model.velocity, z1, 50, "midpoint") - exact).abs().max()
    assert err_mid < 1e-3 < err_euler < 0.1  # midpoint is second order, Euler first
    assert (sample_ode(model.velocity, z1, 200, "euler") - exact).abs().max() < err_euler / 3
