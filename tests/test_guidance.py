"""Guidance as conditioning: omega sampler, condition, guided targets in float64, sampling."""

import math

import pytest
import torch

from imf_exp.boundary import BoundaryMode
from imf_exp.errors import ConfigError
from imf_exp.models import MLP, ResMLP
from imf_exp.objectives import IMF, FlowMatching, MeanFlow, interpolate
from imf_exp.objectives.guidance import CFG, Condition, guided_velocity
from imf_exp.sampling import generate, sample_average

K = 3


def make_model(cls=MLP, aux_head=False, seed=0):
    torch.manual_seed(seed)
    return cls(2, width=32, depth=2, embedding_dim=8, aux_head=aux_head, num_classes=K).double()


def batch(n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    e = torch.randn(n, 2, generator=g, dtype=torch.float64)
    a, b = torch.rand(2, n, generator=g, dtype=torch.float64)
    r, t = torch.minimum(a, b), torch.maximum(a, b)
    r[::4] = t[::4]  # some flow-matching examples
    guidance = CFG(p_drop=0.25, omega_max=5.0)
    guidance.check_dataset(K, "test")
    y = torch.randint(0, K, (n,), generator=g)
    cond = guidance.condition(y, r, t, g)
    cond = Condition(cond.labels, *(c.double() for c in cond[1:]))
    return x, e, r, t, cond


def guided_case():
    """The default model and batch, ``z``, ``v`` and the guided target ``(v_g, v_c)`` on them."""
    model = make_model()
    x, e, r, t, cond = batch()
    z, v = interpolate(x, e, t)
    v_g, v_c = guided_velocity(model, z, t, v, cond)
    return model, (x, e, r, t, cond), z, v, v_g, v_c


def fd_dudt(model, z, r, t, cond, tangent, h=1e-5):
    """``du/dt`` along ``(tangent, 1)`` by central differences, the condition held fixed."""
    return (model(z + h * tangent, r, t + h, cond) - model(z - h * tangent, r, t - h, cond)) / (2 * h)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_omega_density(beta):
    """Histogram of the sampled omega against the density ~ omega^-beta on [1, omega_max]."""
    guidance = CFG(omega_max=6.0, beta=beta)
    w = guidance.sample_omega(400_000, torch.Generator().manual_seed(0)).double()
    assert w.min() >= 1.0 and w.max() <= 6.0
    edges = torch.linspace(1, 6, 11, dtype=torch.float64)
    hist = torch.histc(w, bins=10, min=1, max=6) / len(w)
    mids = torch.linspace(1, 6, 101, dtype=torch.float64)
    for i in range(10):  # the probability of each bin by integrating the density numerically
        xs = torch.linspace(edges[i], edges[i + 1], 201, dtype=torch.float64)
        p = torch.trapezoid(guidance.omega_density(xs), xs)
        assert abs(hist[i] - p) < 0.004, (i, hist[i], p)
    assert torch.trapezoid(guidance.omega_density(mids), mids) == pytest.approx(1.0, abs=1e-3)
    if beta == 1.0:  # omega = omega_max ** U: log omega is uniform, mean (w_max - 1) / log w_max
        assert w.mean() == pytest.approx(5.0 / math.log(6.0), rel=0.01)


def test_condition_drop_interval_and_effective_omega():
    g = torch.Generator().manual_seed(0)
    n = 100_000
    t = torch.rand(n, generator=g)
    r = torch.where(torch.rand(n, generator=g) < 0.5, t, t * torch.rand(n, generator=g))
    guidance = CFG(p_drop=0.2, t_lo_range=[0.1, 0.3], t_hi_range=[0.6, 0.9])
    guidance.check_dataset(4, "test")
    cond = guidance.condition(torch.randint(0, 4, (n,), generator=g), r, t, g)
    assert (cond.labels == 4).float().mean().item() == pytest.approx(0.2, abs=0.01)
    fm = r == t
    assert torch.all(cond.t_lo[fm] == 0) and torch.all(cond.t_hi[fm] == 1)
    lo, hi = cond.t_lo[~fm], cond.t_hi[~fm]
    assert lo.min() >= 0.1 and lo.max() <= 0.3 and hi.min() >= 0.6 and hi.max() <= 0.9
    w = cond.effective_omega(t)
    inside = (t >= cond.t_lo) & (t <= cond.t_hi)
    assert torch.equal(w[inside], cond.omega[inside]) and torch.all(w[~inside] == 1)


def test_guided_target_matches_formula():
    """v_g = v + (1 - 1/w)(v(z,t|c,w) - v(z,t|null,w)), w = omega inside the interval, else 1."""
    model, (_, _, _, t, cond), z, v, v_g, v_c = guided_case()
    with torch.no_grad():
        for i in range(len(t)):
            w = cond.omega[i] if cond.t_lo[i] <= t[i] <= cond.t_hi[i] else torch.tensor(1.0).double()
            zi, ti = z[i:i + 1], t[i:i + 1]
            vc, vu = (model(zi, ti, ti, Condition.build(torch.tensor([label]), w.item(), (0.0, 1.0))
                            .to("cpu", torch.float64)) for label in (int(cond.labels[i]), K))
            expected = v[i] + (1 - 1 / w) * (vc[0] - vu[0])
            assert torch.allclose(v_g[i], expected, atol=1e-12), i
            assert torch.allclose(v_c[i], vc[0], atol=1e-12)
    dropped = cond.labels == K
    assert dropped.any() and torch.allclose(v_g[dropped], v[dropped], atol=1e-12)


@pytest.mark.parametrize("aux_head", [False, True])
def test_guided_imf_loss_against_finite_differences(aux_head):
    """The iMF loss with guidance, rebuilt independently: du/dt by central differences along
    (v_c, 1) with the condition held fixed; V = u + (t - r) du/dt; metric against v_g."""
    model = make_model(ResMLP, aux_head)
    x, e, r, t, cond = batch()
    objective = IMF(norm_p=0.0)
    loss, logs = objective(model, x, e, r, t, BoundaryMode(aux_head, 0.5), cond)
    z, v = interpolate(x, e, t)
    with torch.no_grad():
        w = cond.effective_omega(t)
        vq = Condition(cond.labels, w, torch.zeros_like(w), torch.ones_like(w))
        null = Condition(torch.full_like(cond.labels, K), w, vq.t_lo, vq.t_hi)
        v_c, v_u = model.velocity(z, t, vq), model.velocity(z, t, null)
        v_g = v + (1 - 1 / w)[:, None] * (v_c - v_u)
        dudt = fd_dudt(model, z, r, t, cond, v_c)
        V = model(z, r, t, cond) + (t - r)[:, None] * dudt
        expected_u = ((V - v_g) ** 2).sum(1).mean()
        assert logs["loss_u"].item() == pytest.approx(expected_u.item(), rel=1e-7)
        if aux_head:
            expected_v = ((v_c - v_g) ** 2).sum(1).mean()
            assert logs["loss_v"].item() == pytest.approx(expected_v.item(), rel=1e-9)
            assert loss.item() == pytest.approx((expected_u + 0.5 * expected_v).item(), rel=1e-7)


def test_guided_meanflow_and_fm_targets():
    model, (x, e, r, t, cond), z, _, v_g, _ = guided_case()
    with torch.no_grad():
        dudt = fd_dudt(model, z, r, t, cond, v_g)
        u_tgt = v_g - (t - r)[:, None] * dudt
        expected = ((model(z, r, t, cond) - u_tgt) ** 2).sum(1).mean()
        loss, _ = MeanFlow(norm_p=0.0)(model, x, e, r, t, BoundaryMode(), cond)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-7)
        loss, _ = FlowMatching(norm_p=0.0)(model, x, e, r, t, BoundaryMode(), cond)
        wq = cond.velocity_condition(cond.effective_omega(t))  # the velocity at the scale in use
        expected = ((model.velocity(z, t, wq) - v_g) ** 2).sum(1).mean()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-9)


def test_guided_sampling_is_one_evaluation_and_passes_the_condition():
    model = make_model()
    calls = []
    original = model.forward

    def counting(z, r, t, cond=None):
        calls.append(cond)
        return original(z, r, t, cond)

    model.forward = counting
    z1 = torch.randn(10, 2, dtype=torch.float64)
    cond = Condition.build(torch.arange(10) % K, 3.0, (0.2, 0.8)).to("cpu", torch.float64)
    x = sample_average(model, z1, 1, cond)
    assert len(calls) == 1 and torch.equal(calls[0].omega, cond.omega)
    assert torch.equal(calls[0].t_lo, cond.t_lo)
    with torch.no_grad():
        assert torch.allclose(x, z1 - original(z1, torch.zeros(10).double(), torch.ones(10).double(), cond))
    # the ODE uses omega inside the interval and 1 outside it, always with the interval [0, 1]
    calls.clear()
    generate(model, z1, "ode", 10, cond=cond)
    assert len(calls) == 10
    for i, c in enumerate(calls):
        t = 1.0 - i / 10
        expected = 3.0 if 0.2 <= t <= 0.8 else 1.0
        assert torch.all(c.omega == expected) and torch.all(c.t_lo == 0) and torch.all(c.t_hi == 1), t


def test_conditional_model_without_condition_is_unconditional():
    model = make_model()
    z = torch.randn(5, 2, dtype=torch.float64)
    r, t = torch.zeros(5).double(), torch.ones(5).double()
    null = Condition.build(torch.full((5,), K), 1.0).to("cpu", torch.float64)
    with torch.no_grad():
        assert torch.equal(model(z, r, t), model(z, r, t, null))
    unconditional = MLP(2, width=16, depth=1).double()
    with pytest.raises(ConfigError, match="unconditional"):
        unconditional(z, r, t, null)


@pytest.mark.parametrize("kwargs,key", [
    (dict(p_drop=1.0), "guidance.p_drop"), (dict(omega_max=0.5), "guidance.omega_max"),
    (dict(t_lo_range=[0.6, 0.7]), "guidance.t_lo_range"), (dict(eval_omega=[0.5]), "guidance.eval_omega"),
    (dict(t_hi_range=[0.5, 1.5]), "guidance.t_hi_range"), (dict(eval_interval=[0.8, 0.2]), "guidance.eval_interval"),
])
def test_bad_guidance_values(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        CFG(**kwargs)


def test_unlabelled_dataset_is_refused():
    with pytest.raises(ConfigError, match="guidance=cfg needs class labels, but dataset Checkerboard"):
        CFG().check_dataset(0, "Checkerboard")


GUIDED = ["dataset=moons", "guidance=cfg", "trainer.steps=600", "trainer.batch_size=512",
          "model.width=128", "objective.norm_p=0", "eval.n=300", "eval.floor_repeats=1",
          "eval.nfe=[1]", "trainer.eval_every=0", "trainer.compile=off", "trainer.progress=false"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shared", "aux_head"])
def test_larger_omega_moves_samples_away_from_the_other_class(tmp_path, mode):
    """Measured on a trained two-class model: the mean distance from one-step samples asked for
    class c to the nearest reference point of the other class grows with omega."""
    from imf_exp.run_dir import RunDir
    from tests.conftest import train_in_process

    run_dir = train_in_process([*GUIDED, f"boundary_mode={mode}"], tmp_path / mode)
    run = RunDir(run_dir).load(device="cpu")
    model = run.model
    g = torch.Generator().manual_seed(5)
    ref, ref_y = run.parts.dataset.sample(4000, g)
    z1 = torch.randn(2000, 2, generator=g)
    distance = {}
    for w in (1.0, 2.0, 4.0):
        for c in (0, 1):
            x = generate(model, z1, "average", 1, cond=Condition.build(torch.full((2000,), c), w))
            distance[w, c] = torch.cdist(x, ref[ref_y != c]).min(1).values.mean().item()
    for c in (0, 1):
        assert distance[1.0, c] < distance[2.0, c] < distance[4.0, c], distance
        assert distance[4.0, c] > 1.3 * distance[1.0, c], distance
    # and the evaluation's class accuracy (k-NN probe) rises with omega too
    import json

    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert final["nfe1_w2/accuracy"] > final["nfe1/accuracy"], final
    assert (run_dir / "figures" / "class_grid.png").stat().st_size > 10_000


@pytest.mark.parametrize("aux_head", [False, True])
def test_compiled_guided_loss_matches_eager(aux_head):
    """The guided iMF loss under torch.compile (the condition passed as a NamedTuple of tensors):
    same loss and gradients as eager to float32 rounding, in one graph (no graph break)."""
    from imf_exp.compile import compile_loss, own_code

    torch.manual_seed(0)
    model = MLP(2, width=16, depth=1, embedding_dim=8, aux_head=aux_head, num_classes=K)
    x, e, r, t, cond = batch(32)
    x, e, r, t = (a.float() for a in (x, e, r, t))
    cond = Condition(cond.labels, *(c.float() for c in cond[1:]))
    objective, boundary = IMF(), BoundaryMode(aux_head)

    def loss_fn(x, e, r, t, cond):
        return objective(model, x, e, r, t, boundary, cond)

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss, _ = fn(x, e, r, t, cond)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = loss_and_grads(loss_fn)
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    compiled = compile_loss(own_code(loss_fn, f"guided_{aux_head}"), dynamic=False)
    compiled_loss, compiled_grads = loss_and_grads(compiled)
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == breaks
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-7)
    for g_c, g_e in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-6)
