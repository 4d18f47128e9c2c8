"""The dataset protocol: native samples plus a fixed standardization.

A dataset draws ``n`` i.i.d. points in its *native* coordinates with a given
``torch.Generator`` (on the generator's device). Training and evaluation see
*standardized* points ``(x - mean) / std`` where ``mean`` and ``std`` are fixed
numbers (given in the config, or computed once from a large reference sample
with a fixed seed), never per batch.

Your own sampler: subclass :class:`Dataset` and implement :meth:`sample_native`,
or point ``dataset._target_`` at any class whose instances have ``dim`` and
``sample(n, generator) -> x`` or ``(x, y)``; it is wrapped by
:func:`as_dataset`.
"""

from __future__ import annotations

import logging
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from imf_exp.errors import ConfigError

log = logging.getLogger(__name__)
REFERENCE_N = 1_000_000
REFERENCE_SEED = 0


class Dataset(ABC):
    """Base class: subclasses set ``dim``, ``num_classes`` and implement ``sample_native``."""

    dim: int = 2
    num_classes: int = 0  # 0: no labels

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if mean is None or std is None:
            m, s = self.reference_statistics()
            mean = m.tolist() if mean is None else mean
            std = s.tolist() if std is None else std
        if len(mean) != self.dim or len(std) != self.dim:
            raise ConfigError(
                f"dataset.mean/dataset.std must have {self.dim} entries (the dataset's dim); "
                f"got {len(mean)} and {len(std)}"
            )
        if not all(math.isfinite(float(v)) for v in [*mean, *std]):
            raise ConfigError(f"dataset {self.name}: its standardization statistics are not finite "
                              f"(mean {list(mean)}, std {list(std)}): does sample() draw NaN or inf?")
        if any(float(s) <= 0 for s in std):
            raise ConfigError(f"dataset.std={list(std)} is not allowed: every entry must be > 0")
        self.mean = torch.tensor([float(m) for m in mean], dtype=torch.float64)
        self.std = torch.tensor([float(s) for s in std], dtype=torch.float64)
        self._stats: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def sample_native(
        self, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw ``n`` i.i.d. points ``(n, dim)`` in native coordinates (and labels ``(n,)`` or None)."""

    def reference_statistics(
        self, n: int = REFERENCE_N, seed: int = REFERENCE_SEED
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std of a large native sample drawn with a fixed seed (float64)."""
        g = torch.Generator().manual_seed(seed)
        x, _ = self.sample_native(n, g)
        x = x.double()
        return x.mean(0), x.std(0)

    def sample(
        self, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw ``n`` standardized points (float32, on the generator's device) and labels."""
        x, y = self.sample_native(n, generator)
        return self.standardize(x), y

    def state_dict(self) -> dict:
        """What a dataset must carry across a resume besides the run's generator (nothing for a
        stateless sampler); part of every checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - an optional hook
        """Restore what :meth:`state_dict` returned (nothing, for a stateless sampler)."""

    def eval_reference(self, n: int, generator: torch.Generator):
        """The evaluation reference set ``(x, labels)``: ``n`` fresh standardized points."""
        return self.sample(n, generator)

    def floor_pair(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two reference sets whose W2 is the sampling floor: two fresh draws of ``n`` points."""
        return self.sample(n, generator)[0], self.sample(n, generator)[0]

    def statistics(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` on ``device`` in ``dtype``, copied there once: a training step never
        copies them from the host again (a host-to-device copy would synchronize the stream)."""
        key = (device, dtype)
        if key not in self._stats:
            self._stats[key] = (self.mean.to(device=device, dtype=dtype),
                                self.std.to(device=device, dtype=dtype))
        return self._stats[key]

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.statistics(x.device, x.dtype)
        return (x - mean) / std

    def destandardize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.statistics(x.device, x.dtype)
        return x * std + mean


class _Wrapped(Dataset):
    """Adapter for a duck-typed sampler with ``dim`` and ``sample(n, generator)``.

    ``sample`` may return ``x`` or ``(x, labels)`` as tensors or numpy arrays; they are moved to
    the generator's device (a sampler that draws on the CPU works for CUDA training too; one
    that draws with ``device=generator.device`` keeps everything there). Optional attributes:
    ``num_classes`` (an int), and ``mean`` / ``std`` (``dim`` numbers each) as the fixed
    standardization; attributes of those names that are not ``dim`` numbers are ignored.
    """

    def __init__(self, inner: Any, mean=None, std=None) -> None:
        self.inner = inner
        name = type(inner).__name__
        dim, classes = getattr(inner, "dim", None), getattr(inner, "num_classes", 0)
        if not _is_int(dim) or dim < 1:
            raise ConfigError(f"dataset {name}: dim={dim!r} is not allowed: an int >= 1")
        if not _is_int(classes) or classes < 0:
            raise ConfigError(f"dataset {name}: num_classes={classes!r} is not allowed: an int >= 0")
        self.dim, self.num_classes = int(dim), int(classes)
        self._cpu_generator: torch.Generator | None = None  # see _takes_a_cpu_generator
        super().__init__(mean if mean is not None else _statistics(inner, "mean", self.dim),
                         std if std is not None else _statistics(inner, "std", self.dim))

    @property
    def name(self) -> str:
        return type(self.inner).__name__

    def _takes_a_cpu_generator(self, n: int, generator: torch.Generator) -> bool:
        """A sampler written for the CPU (``torch.rand(n, generator=g)`` with no device) fails on
        a CUDA generator: from then on it gets a CPU generator of its own, seeded from the run's
        (its state goes into checkpoints), and what it draws is moved to the device. True when
        the sampler works that way."""
        seed = generator.initial_seed()  # the run's seed: known on the host, no sync
        try:
            self.inner.sample(min(n, 8), torch.Generator().manual_seed(seed))
        except Exception:  # noqa: BLE001 - it fails on the CPU too: the caller reports the first error
            return False
        self._cpu_generator = torch.Generator().manual_seed(seed)
        log.warning("dataset %s.sample does not draw with a %s generator: it gets a CPU generator of "
                    "its own, and its points are moved to the device", self.name, "CUDA")
        return True

    def state_dict(self) -> dict:
        return {} if self._cpu_generator is None else {"cpu_generator": self._cpu_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "cpu_generator" in state:
            self._cpu_generator = torch.Generator()
            self._cpu_generator.set_state(state["cpu_generator"])

    def sample_native(self, n, generator):
        own = self._cpu_generator if generator.device.type != "cpu" else None
        try:
            out = self.inner.sample(n, own or generator)
        except Exception as err:  # noqa: BLE001 - the user's code: say whose it is
            if generator.device.type != "cpu" and own is None and self._takes_a_cpu_generator(n, generator):
                return self.sample_native(n, generator)
            raise ConfigError(f"dataset {self.name}.sample({n}, generator) raised "
                              f"{type(err).__name__}: {str(err).strip().splitlines()[0]}") from None
        x, y = out if isinstance(out, tuple) else (out, None)
        device = generator.device
        try:
            x = torch.as_tensor(x, dtype=torch.float32, device=device)
            y = None if y is None else torch.as_tensor(y, device=device).long()
        except (TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(f"dataset {self.name}.sample({n}, generator) must return a float "
                              f"array x (or a tuple (x, labels)); got {type(out).__name__} ({err})") from None
        if x.shape != (n, self.dim):
            raise ConfigError(
                f"dataset {self.name}.sample({n}, generator) must return shape ({n}, {self.dim}); "
                f"got {tuple(x.shape)}"
            )
        return x, y


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _statistics(inner: Any, attr: str, dim: int) -> list[float] | None:
    """``inner.<attr>`` when it is ``dim`` finite numbers (a fixed statistic), else None."""
    value = getattr(inner, attr, None)
    try:
        values = [float(v) for v in torch.as_tensor(value, dtype=torch.float64).reshape(-1).tolist()]
    except (TypeError, ValueError, RuntimeError):
        return None
    ok = len(values) == dim and all(math.isfinite(v) for v in values) and value is not None
    return values if ok and (attr != "std" or all(v > 0 for v in values)) else None


def check_samples(dataset: Dataset, n: int = 97) -> None:
    """Draw ``n`` points once, up front, and check what comes back: shape, finiteness, labels
    present exactly when the dataset has classes, and in ``[0, num_classes)``. Raises
    :class:`ConfigError` naming the dataset."""
    x, y = dataset.sample(n, torch.Generator().manual_seed(0))
    name = dataset.name
    if x.shape != (n, dataset.dim):
        raise ConfigError(f"dataset {name} drew shape {tuple(x.shape)}; expected ({n}, {dataset.dim})")
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"dataset {name} drew non-finite points (NaN or inf)")
    if dataset.num_classes and y is None:
        raise ConfigError(f"dataset {name} has num_classes={dataset.num_classes} but sample() "
                          "returned no labels: return (x, labels)")
    if y is not None:
        if y.shape != (n,):
            raise ConfigError(f"dataset {name} drew labels of shape {tuple(y.shape)}; expected ({n},)")
        k = dataset.num_classes
        if k and not bool(((y >= 0) & (y < k)).all()):
            raise ConfigError(f"dataset {name} drew labels in [{int(y.min())}, {int(y.max())}]; "
                              f"allowed: 0 .. {k - 1} (num_classes={k})")


def as_dataset(obj: Any) -> Dataset:
    """Return ``obj`` if it is a :class:`Dataset`, else wrap a duck-typed sampler."""
    if isinstance(obj, Dataset):
        return obj
    if not hasattr(obj, "dim") or not callable(getattr(obj, "sample", None)):
        raise ConfigError(
            f"dataset._target_ built a {type(obj).__name__}, which is not a dataset: it needs "
            "an int attribute 'dim' and a method sample(n, generator) returning x or (x, y), "
            "or subclass imf_exp.data.Dataset"
        )
    return _Wrapped(obj)
