"""The 64-D digits dataset, its evaluation probe and the Frechet distance."""

import numpy as np
import pytest
import torch

from imf_exp.data import Digits
from imf_exp.metrics import ClassifierProbe, Evaluator, KNNProbe, frechet_distance
from imf_exp.objectives.guidance import CFG


def test_split_standardization_and_sampling():
    ds = Digits()
    assert ds.dim == 64 and ds.num_classes == 10
    assert len(ds.train_y) == 1297 and len(ds.test_y) == 500
    # the held-out images are not in the training split (rows compared exactly)
    train = {tuple(r) for r in ds.train_x.int().tolist()}
    overlap = sum(tuple(r) in train for r in ds.test_x.int().tolist())
    assert overlap < 5  # a handful of exact duplicates exist in the raw data; not the split
    x, y = ds.sample(4096, torch.Generator().manual_seed(0))
    assert x.shape == (4096, 64) and x.min() >= -1 and x.max() <= 1  # [0, 16] -> [-1, 1]
    assert set(y.tolist()) == set(range(10))
    assert torch.allclose(ds.destandardize(x.double()), ((x + 1) * 8).double())
    ref, ref_y = ds.eval_reference(2000, None)
    assert ref.shape == (500, 64) and torch.equal(ref_y, ds.test_y)
    a, b = ds.floor_pair(500, torch.Generator().manual_seed(1))
    assert a.shape == b.shape == (500, 64) and torch.equal(b, ref)


def test_jitter_dequantizes_within_its_width():
    ds = Digits(jitter=1.0)
    x, _ = ds.sample_native(2000, torch.Generator().manual_seed(0))
    frac = x - x.round()
    assert frac.abs().max() <= 0.5 + 1e-6 and frac.std() > 0.2


def test_frechet_distance_closed_form():
    """Two Gaussians: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); identical sets: 0."""
    g = np.random.default_rng(0)
    a = g.standard_normal((20000, 3))
    b = g.standard_normal((20000, 3)) * 2.0 + np.array([1.0, 0.0, -1.0])
    # closed form: |mu|^2 = 2, tr(I + 4I - 2 * 2I) = 3
    assert frechet_distance(a, b) == pytest.approx(5.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_probes_label_real_data():
    ds = Digits()
    probe = ClassifierProbe(*ds.labelled_train())
    ref, ref_y = ds.eval_reference(500, None)
    assert (probe.predict(ref) == ref_y).float().mean() > 0.93  # held-out accuracy of real digits
    assert probe.features(ref).shape == (500, 64)
    # the k-NN probe of 2-D data: points at the class centres get their class
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
    knn = KNNProbe(x, torch.tensor([0, 0, 0, 1, 1, 1]), k=3)
    assert knn.predict(torch.tensor([[0.05, 0.05], [4.9, 5.2]])).tolist() == [0, 1]


def test_digits_evaluator_scores_real_images_near_the_floor():
    """Held-out-like real images score W2 ratio ~1 and accuracy ~ the probe's; noise does not."""
    ds = Digits()
    guidance = CFG(eval_omega=[1.0])
    guidance.check_dataset(10, "Digits")
    ev = Evaluator(ds, n=500, floor_repeats=2, guidance=guidance)
    assert ev.n == 500 and ev.fd_floor is not None and ev.fd_floor > 0
    real, _ = ds.floor_pair(500, torch.Generator().manual_seed(7))
    idx = torch.randperm(len(ds.train_y), generator=torch.Generator().manual_seed(7))[:500]
    good = ev.score(real, ds.train_y[idx])
    assert 0.9 < good["w2_ratio"] < 1.1 and good["accuracy"] > 0.95
    assert good["fd"] < 2 * ev.fd_floor
    noise = ev.score(torch.randn(500, 64).clamp(-1, 1), ds.train_y[idx])
    assert noise["w2_ratio"] > 1.5 and noise["accuracy"] < 0.3 and noise["fd"] > 20 * ev.fd_floor


def test_unguided_digits_runs_get_fd_but_no_accuracy():
    ds = Digits()
    ev = Evaluator(ds, n=500, floor_repeats=1)
    real, _ = ds.floor_pair(500, torch.Generator().manual_seed(7))
    scores = ev.score(real)
    assert "fd" in scores and "accuracy" not in scores and scores["fd"] < 2 * ev.fd_floor
    assert [s[0] for s in ev.samplers] == ["nfe1", "nfe2", "nfe4"]
