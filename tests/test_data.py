import pytest
import torch

from imf_exp.data import Circles, Dataset, Moons, as_dataset
from imf_exp.errors import ConfigError

DATASETS = ["moons", "circles", "eight_gaussians", "checkerboard", "swissroll", "spirals"]


def build(name):
    """The dataset option as the config builds it (its fixed statistics from the schema)."""
    from imf_exp.build import build as build_parts
    from tests.conftest import compose_cfg

    return build_parts(compose_cfg([f"dataset={name}"])).dataset


@pytest.mark.parametrize("name", DATASETS)
def test_fixed_statistics_match_a_large_reference_sample(name):
    ds = build(name)
    mean, std = ds.reference_statistics(n=400_000, seed=7)  # a different seed than the one used
    assert torch.allclose(ds.mean, mean, atol=0.01 * std.max().item())
    assert torch.allclose(ds.std, std, rtol=0.01)
    x, y = ds.sample(100_000, torch.Generator().manual_seed(3))
    assert x.shape == (100_000, 2) and x.dtype == torch.float32
    assert torch.allclose(x.mean(0).double(), torch.zeros(2, dtype=torch.float64), atol=0.02)
    assert torch.allclose(x.std(0).double(), torch.ones(2, dtype=torch.float64), atol=0.02)
    if ds.num_classes:
        assert y.shape == (100_000,) and set(y.unique().tolist()) == set(range(ds.num_classes))
    else:
        assert y is None
    back = ds.destandardize(x.double())
    assert torch.allclose(ds.standardize(back), x.double(), atol=1e-6)


def test_samples_are_iid_not_on_a_grid():
    ds = Moons(noise=0.0)
    a, _ = ds.sample_native(1000, torch.Generator().manual_seed(0))
    b, _ = ds.sample_native(1000, torch.Generator().manual_seed(1))
    assert not torch.allclose(a.sort(0).values, b.sort(0).values, atol=1e-3)
    # on the two unit half circles exactly when noise = 0
    upper = (a - torch.tensor([0.0, 0.0])).norm(dim=1)
    lower = (a - torch.tensor([1.0, 0.5])).norm(dim=1)
    assert torch.allclose(torch.minimum((upper - 1).abs(), (lower - 1).abs()), torch.zeros(1000), atol=1e-5)


def test_circles_radii():
    ds = Circles(factor=0.3, noise=0.0)
    x, y = ds.sample_native(1000, torch.Generator().manual_seed(0))
    radius = x.norm(dim=1)
    assert torch.allclose(radius[y == 0], torch.ones(1), atol=1e-5)
    assert torch.allclose(radius[y == 1], torch.full((1,), 0.3), atol=1e-5)


class Ring:
    """A user's own sampler: duck-typed, no import of the package needed."""

    dim = 2

    def __init__(self, radius=3.0):
        self.radius = radius

    def sample(self, n, generator):
        theta = 6.283185307 * torch.rand(n, generator=generator)
        return self.radius * torch.stack([theta.cos(), theta.sin()], 1)


def test_duck_typed_sampler_gets_fixed_standardization():
    ds = as_dataset(Ring(2.0))
    assert isinstance(ds, Dataset) and ds.dim == 2 and ds.num_classes == 0
    assert torch.allclose(ds.std, torch.full((2,), 2.0 / 2**0.5, dtype=torch.float64), rtol=0.01)
    x, y = ds.sample(10, torch.Generator().manual_seed(0))
    assert x.shape == (10, 2) and y is None


def test_not_a_dataset_is_refused_with_what_is_needed():
    with pytest.raises(ConfigError, match="dim.*sample"):
        as_dataset(object())


@pytest.mark.parametrize("make,key", [
    (lambda: Moons(noise=-1), "dataset.noise"),
    (lambda: Circles(factor=1.5), "dataset.factor"),
    (lambda: Moons(mean=[0.0], std=[1.0, 1.0]), "dataset.mean"),
    (lambda: Moons(mean=[0.0, 0.0], std=[1.0, 0.0]), "dataset.std"),
])
def test_bad_dataset_values(make, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make()


def test_custom_samplers_get_what_they_need_and_nothing_else():
    """An attribute ``std`` that is not a standardization (a noise level) is ignored; a sampler
    that draws on the CPU and returns numpy is moved to the generator's device; both are checked
    once (shape, finiteness, labels) and train."""
    from imf_exp.data import check_samples
    from tests.helpers import CpuNumpy, NoiseStd

    ds = as_dataset(NoiseStd(0.1))
    assert torch.allclose(ds.mean, torch.full((2,), 3.0, dtype=torch.float64), atol=0.01)
    assert torch.allclose(ds.std, torch.full((2,), 0.1, dtype=torch.float64), rtol=0.02)
    numpy_ds = as_dataset(CpuNumpy())
    check_samples(numpy_ds)
    x, y = numpy_ds.sample(10, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and y.dtype == torch.long and numpy_ds.num_classes == 2
    fixed = as_dataset(type("Fixed", (), {"dim": 2, "mean": [1.0, 2.0], "std": [3.0, 4.0],
                                          "sample": lambda self, n, g: torch.randn(n, 2, generator=g)})())
    assert fixed.mean.tolist() == [1.0, 2.0] and fixed.std.tolist() == [3.0, 4.0]


class _DeviceGenerator:
    """Stands in for a CUDA generator on a machine without one: a generator object of another
    device ("meta": shapes without data), which a sampler written for the CPU cannot use."""

    device = torch.device("meta")

    def initial_seed(self):
        return 7


def test_a_sampler_written_for_the_cpu_gets_a_cpu_generator_on_another_device(caplog):
    """``torch.rand(n, generator=g)`` without a device fails with a CUDA generator: the wrapper then
    hands the sampler a CPU generator of its own (seeded from the run's), moves what it draws to
    the device, says so once, and carries that generator's state through checkpoints."""
    from imf_exp.cuda_check import CpuOnlySampler

    ds = as_dataset(CpuOnlySampler())
    with caplog.at_level("WARNING"):
        x, _ = ds.sample_native(16, _DeviceGenerator())
        ds.sample_native(16, _DeviceGenerator())
    assert x.device.type == "meta" and x.shape == (16, 2)
    assert caplog.text.count("gets a CPU generator of its own") == 1
    state = ds.state_dict()
    later = ds.inner.sample(5, ds._cpu_generator)  # what the next draw gives
    other = as_dataset(CpuOnlySampler())
    other.load_state_dict(state)
    assert torch.equal(other.inner.sample(5, other._cpu_generator), later)
    assert as_dataset(Ring()).state_dict() == {}  # nothing to carry when it never switched
