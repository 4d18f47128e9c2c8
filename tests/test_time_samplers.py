import math

import pytest
import torch

from imf_exp.errors import ConfigError
from imf_exp.time_samplers import LogitNormalTimeSampler, UniformTimeSampler

N = 200_000


@pytest.mark.parametrize("sampler", [UniformTimeSampler(0.3), LogitNormalTimeSampler(-0.4, 1.0, 0.75)])
def test_order_and_fraction_equal(sampler):
    r, t = sampler.sample(N, torch.Generator().manual_seed(0))
    assert r.shape == t.shape == (N,)
    assert bool((r <= t).all()) and bool((r >= 0).all()) and bool((t <= 1).all())
    frac = (r == t).double().mean().item()
    assert abs(frac - sampler.p_equal) < 4 * math.sqrt(sampler.p_equal * (1 - sampler.p_equal) / N)


def test_uniform_max_min_moments():
    r, t = UniformTimeSampler(0.0).sample(N, torch.Generator().manual_seed(1))
    assert abs(t.mean().item() - 2 / 3) < 0.005  # E max(a, b) of two U(0, 1)
    assert abs(r.mean().item() - 1 / 3) < 0.005


def test_logit_normal_base_moments():
    s = LogitNormalTimeSampler(mu=-0.4, sigma=1.3, p_equal=0.0)
    logit = torch.logit(s.base(N, torch.Generator().manual_seed(2)).double())
    assert abs(logit.mean().item() + 0.4) < 0.02
    assert abs(logit.std().item() - 1.3) < 0.02


@pytest.mark.parametrize("make,key", [
    (lambda: UniformTimeSampler(1.5), "time_sampler.p_equal"),
    (lambda: UniformTimeSampler(-0.1), "time_sampler.p_equal"),
    (lambda: LogitNormalTimeSampler(sigma=0.0), "time_sampler.sigma"),
])
def test_bad_values_name_the_key(make, key):
    with pytest.raises(ConfigError, match=key):
        make()
