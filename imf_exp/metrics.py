"""Sample-quality metrics for low-dimensional data.

* ``w2``: exact 2-Wasserstein distance between two equal-size point clouds (POT ``emd2``,
  squared-Euclidean cost, then sqrt). Its *floor* is W2 between two fresh reference sets of the
  same size; the *ratio* W2 / floor is 1.0 when generated points are as close to the data as
  another i.i.d. draw.
* ``precision_recall``: k-NN precision and recall (Kynkaanniemi et al., 2019; k = 3).
* ``mmd``: squared MMD with a sum of RBF kernels over several bandwidths (unbiased estimate).
"""

from __future__ import annotations

import numpy as np
import ot
import torch


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def w2(x, y, num_iter_max: int | None = None) -> float:
    """Exact W2 between uniform empirical measures on ``x (n, d)`` and ``y (m, d)``."""
    x, y = _np(x), _np(y)
    cost = ot.dist(x, y, metric="sqeuclidean")
    iters = num_iter_max or max(100_000, 50 * len(x) * len(y) // 100)
    return float(np.sqrt(max(ot.emd2([], [], cost, numItermax=iters), 0.0)))


def _kth_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Precision: fraction of ``fake`` inside some real point's k-NN ball; recall: vice versa."""
    real_t, fake_t = torch.as_tensor(_np(real)), torch.as_tensor(_np(fake))
    r_real, r_fake = _kth_radius(real_t, k), _kth_radius(fake_t, k)
    d = torch.cdist(fake_t, real_t)  # (n_fake, n_real)
    precision = (d <= r_real[None, :]).any(1).double().mean().item()
    recall = (d.T <= r_fake[None, :]).any(1).double().mean().item()
    return precision, recall


def mmd(x, y, bandwidths: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased squared MMD with ``k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2))``."""
    x_t, y_t = torch.as_tensor(_np(x)), torch.as_tensor(_np(y))
    n, m = len(x_t), len(y_t)

    def kernel(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)

    kxx, kyy, kxy = kernel(x_t, x_t), kernel(y_t, y_t), kernel(x_t, y_t)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def sample_metrics(fake, real, real_b, w2_floor: float | None = None, k: int = 3) -> dict[str, float]:
    """All metrics of ``fake`` against ``real``; ``real_b`` (a second reference set) gives the floor."""
    floor = w2(real_b, real) if w2_floor is None else w2_floor
    dist = w2(fake, real)
    precision, recall = precision_recall(real, fake, k)
    return {"w2": dist, "w2_floor": floor, "w2_ratio": dist / floor, "precision": precision,
            "recall": recall, "mmd": mmd(fake, real)}


class Evaluator:
    """Fixed reference sets, W2 floor and noise, drawn once with ``seed``; scores any model.

    Metrics are computed in standardized coordinates and named ``"<sampler>/<metric>"``, where
    the sampler is ``nfeK`` (K average-velocity jumps) or ``odeK`` (K ODE steps on ``v``).
    """

    def __init__(self, dataset, n: int = 2000, nfe=(1, 2, 4), ode_steps=(100,),
                 ode_method: str = "euler", floor_repeats: int = 3, seed: int = 1234,
                 sampling: str = "average") -> None:
        g = torch.Generator().manual_seed(seed)
        self.dataset, self.n, self.ode_method = dataset, n, ode_method
        self.real, _ = dataset.sample(n, g)
        floors = []
        for _ in range(floor_repeats):
            a, _ = dataset.sample(n, g)
            b, _ = dataset.sample(n, g)
            floors.append(w2(a, b))
        self.floor = float(np.mean(floors))
        self.z1 = torch.randn(n, dataset.dim, generator=g)
        if sampling == "average":
            self.samplers = [(f"nfe{k}", "average", int(k)) for k in nfe]
        else:
            self.samplers = [(f"ode{k}", "ode", int(k)) for k in ode_steps]

    @property
    def primary(self) -> str:
        """The metric a sweep optimizes: W2 ratio of the first sampler."""
        return f"{self.samplers[0][0]}/w2_ratio"

    def __call__(self, model) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        from imf_exp.sampling import generate

        device = next(model.parameters()).device
        z1 = self.z1.to(device)
        metrics: dict[str, float] = {"w2_floor": self.floor}
        samples: dict[str, torch.Tensor] = {}
        for name, kind, steps in self.samplers:
            x = generate(model, z1, kind, steps, self.ode_method).float().cpu()
            samples[name] = x
            if not torch.isfinite(x).all():
                metrics.update({f"{name}/{k}": float("nan") for k in
                                ("w2", "w2_ratio", "precision", "recall", "mmd")})
                continue
            for key, value in sample_metrics(x, self.real, None, self.floor).items():
                if key != "w2_floor":
                    metrics[f"{name}/{key}"] = value
        return metrics, samples
