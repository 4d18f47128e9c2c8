"""Sample-quality metrics for low-dimensional data.

* ``w2``: exact 2-Wasserstein distance between two equal-size point clouds (POT ``emd2``,
  squared-Euclidean cost, then sqrt). Its *floor* is W2 between two fresh reference sets of the
  same size; the *ratio* W2 / floor is 1.0 when generated points are as close to the data as
  another i.i.d. draw.
* ``precision_recall``: k-NN precision and recall (Kynkaanniemi et al., 2019; k = 3).
* ``mmd``: squared MMD with a sum of RBF kernels over several bandwidths (unbiased estimate);
  bandwidths scale with ``sqrt(dim / 2)`` so 2-D and 64-D data get comparable kernels.

Class-conditional samples (``guidance=cfg``) are also scored by a *probe* that labels them:
``accuracy`` is the fraction labelled as the class they were asked for. The probe is a k-NN
vote over the labelled reference set for 2-D data, and for digits a classifier trained on the
real training digits, whose penultimate features also give the Frechet distance ``fd``
(Heusel et al. 2017's formula, in that feature space) with its floor ``fd_floor``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from imf_exp.condition import Condition
from imf_exp.sampling import generate


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def w2(x, y, num_iter_max: int | None = None) -> float:
    """Exact W2 between uniform empirical measures on ``x (n, d)`` and ``y (m, d)``."""
    import ot  # POT imports scikit-learn: paid for only when a run evaluates

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
    """Unbiased squared MMD with ``k(a, b) = sum_s exp(-|a - b|^2 / (2 (s sqrt(d/2))^2))``."""
    x_t, y_t = torch.as_tensor(_np(x)), torch.as_tensor(_np(y))
    n, m = len(x_t), len(y_t)
    bandwidths = tuple(s * math.sqrt(x_t.shape[1] / 2) for s in bandwidths)

    def kernel(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)

    kxx, kyy, kxy = kernel(x_t, x_t), kernel(y_t, y_t), kernel(x_t, y_t)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def frechet_distance(a, b) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two feature sets (float64)."""
    from scipy import linalg

    a, b = _np(a), _np(b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # a singular product (constant features) is expected here
        warnings.simplefilter("ignore", RuntimeWarning)
        covmean = np.asarray(linalg.sqrtm(s_a @ s_b)).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


class KNNProbe:
    """Labels points by a majority vote of their ``k`` nearest labelled reference points."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, k: int = 5) -> None:
        self.x, self.y, self.k = x.double(), y.long(), k
        self.num_classes = int(y.max()) + 1

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x.double(), self.x)
        idx = d.topk(self.k, largest=False).indices
        votes = torch.nn.functional.one_hot(self.y[idx], self.num_classes).sum(1)
        return votes.argmax(1)


class ClassifierProbe:
    """An MLP classifier trained (full batch, Adam, fixed seed) on real labelled data.

    ``features`` are the penultimate activations (the space of the Frechet distance).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, hidden: int = 128, steps: int = 500,
                 seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):  # leaves the global CPU stream untouched
            torch.manual_seed(seed)
            num_classes = int(y.max()) + 1
            self.body = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(),
                                      nn.Linear(hidden, hidden // 2), nn.ReLU())
            self.head = nn.Linear(hidden // 2, num_classes)
            params = list(self.body.parameters()) + list(self.head.parameters())
            opt = torch.optim.Adam(params, lr=3e-3, weight_decay=1e-4)
            for _ in range(steps):
                loss = nn.functional.cross_entropy(self.head(self.body(x.float())), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.body.requires_grad_(False)
        self.head.requires_grad_(False)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).argmax(1)


def sample_metrics(fake, real, w2_floor: float, k: int = 3) -> dict[str, float]:
    """W2, its ratio to ``w2_floor``, k-NN precision and recall, MMD of ``fake`` against ``real``."""
    dist = w2(fake, real)
    precision, recall = precision_recall(real, fake, k)
    return {"w2": dist, "w2_ratio": dist / w2_floor, "precision": precision, "recall": recall,
            "mmd": mmd(fake, real)}


_PROBES: dict[tuple, ClassifierProbe] = {}


def classifier_probe(dataset) -> ClassifierProbe:
    """The evaluation classifier of a dataset with labelled training data (``labelled_train()``),
    trained once per ``dataset.probe_key`` (its split and standardization) in a process."""
    key = dataset.probe_key
    if key not in _PROBES:
        _PROBES[key] = ClassifierProbe(*dataset.labelled_train())
    return _PROBES[key]


class Evaluator:
    """Fixed reference sets, W2 floor and noise, drawn once with ``seed``; scores any model.

    Metrics are computed in standardized coordinates and named ``"<sampler>/<metric>"``, where
    the sampler is ``nfeK`` (K average-velocity jumps) or ``odeK`` (K ODE steps on ``v``); for a
    guided run, samplers at the other ``guidance.eval_omega`` scales get a suffix, e.g.
    ``nfe1_w2/accuracy`` (1 NFE at ``omega = 2``). Guided samples are asked for the reference
    set's own labels, so their class mix matches the data's. With ``ode_diagnostic``, runs
    of average-velocity objectives are also sampled by the ODE on their instantaneous velocity
    (``u(z, t, t)`` or the auxiliary head) at each of ``ode_steps``.
    """

    def __init__(self, dataset, n: int = 2000, nfe=(1, 2, 4), ode_steps=(100,),
                 ode_method: str = "euler", floor_repeats: int = 3, seed: int = 1234,
                 sampling: str = "average", guidance=None, ode_diagnostic: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.dataset, self.ode_method = dataset, ode_method
        self.real, self.real_y = dataset.eval_reference(n, g)
        self.n = len(self.real)
        floors = [w2(*dataset.floor_pair(self.n, g)) for _ in range(floor_repeats)]
        self.floor = float(np.mean(floors))
        self.z1 = torch.randn(self.n, dataset.dim, generator=g)
        self.guided = guidance is not None and guidance.enabled
        self.interval = guidance.eval_interval if self.guided else (0.0, 1.0)
        ode = [(f"ode{k}", "ode", int(k)) for k in ode_steps]
        if sampling == "average":  # ode_diagnostic: also the ODE on the model's own v(z, t)
            base = [(f"nfe{k}", "average", int(k)) for k in nfe] + (ode if ode_diagnostic else [])
        else:
            base = ode
        omegas = guidance.eval_omega if self.guided else (1.0,)
        self.samplers = [(name, kind, steps, omegas[0]) for name, kind, steps in base]
        name, kind, steps = base[0]
        self.samplers += [(f"{name}_w{w:g}", kind, steps, w) for w in omegas[1:]]
        self.probe = None
        self.fd_floor = None
        if hasattr(dataset, "labelled_train"):  # digits: FD for every run, accuracy if guided
            self.probe = classifier_probe(dataset)
            self.real_features = self.probe.features(self.real)
            self.fd_floor = float(np.mean([
                frechet_distance(self.probe.features(a), self.probe.features(b))
                for a, b in (dataset.floor_pair(self.n, g) for _ in range(floor_repeats))]))
        elif self.guided and self.real_y is not None:
            self.probe = KNNProbe(self.real, self.real_y)

    @property
    def primary(self) -> str:
        """The metric a sweep optimizes: W2 ratio of the first sampler."""
        return f"{self.samplers[0][0]}/w2_ratio"

    def condition(self, omega: float, device):
        """The evaluation condition at ``omega``: the reference labels, the eval interval."""
        if not self.guided:
            return None
        return Condition.build(self.real_y, omega, self.interval).to(device)

    def score(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """Metrics of one generated set (standardized, same size as the reference)."""
        if not torch.isfinite(x).all():
            keys = ["w2", "w2_ratio", "precision", "recall", "mmd"]
            keys += ["accuracy"] if self.probe is not None and self.guided else []
            keys += ["fd"] if self.fd_floor is not None else []
            return {k: float("nan") for k in keys}
        out = sample_metrics(x, self.real, self.floor)
        if self.probe is not None and labels is not None:
            out["accuracy"] = float((self.probe.predict(x).cpu() == labels.cpu()).double().mean())
        if self.fd_floor is not None:
            out["fd"] = frechet_distance(self.probe.features(x), self.real_features)
        return out

    def __call__(self, model) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        device = next(model.parameters()).device
        z1 = self.z1.to(device)
        metrics: dict[str, float] = {"w2_floor": self.floor}
        if self.fd_floor is not None:
            metrics["fd_floor"] = self.fd_floor
        samples: dict[str, torch.Tensor] = {}
        for name, kind, steps, omega in self.samplers:
            cond = self.condition(omega, device)
            x = generate(model, z1, kind, steps, self.ode_method, cond).float().cpu()
            samples[name] = x
            scores = self.score(x, self.real_y if self.guided else None)
            metrics.update({f"{name}/{k}": v for k, v in scores.items()})
        return metrics, samples
