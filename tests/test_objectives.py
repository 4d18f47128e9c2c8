"""The iMF objective against finite differences, closed forms and stop-gradient semantics (float64)."""

import pytest
import torch

from imf_exp.boundary import BoundaryMode
from imf_exp.models import MLP, ResMLP
from imf_exp.objectives import (
    IMF,
    FlowMatching,
    MeanFlow,
    adaptive_metric,
    compound_velocity,
    interpolate,
    total_derivative,
)

TIME_INPUTS = ["t,r", "t,t-r", "t-r"]


def make_model(cls, time_input, aux_head, seed=0, input_fourier=0):
    torch.manual_seed(seed)
    kw = dict(width=32, depth=2, time_input=time_input, aux_head=aux_head, embedding_dim=8,
              input_fourier=input_fourier)
    return cls(2, **kw).double()


def batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    e = torch.randn(n, 2, generator=g, dtype=torch.float64)
    a, b = torch.rand(2, n, generator=g, dtype=torch.float64)
    return x, e, torch.minimum(a, b), torch.maximum(a, b)


@pytest.mark.parametrize("cls,input_fourier", [(MLP, 0), (ResMLP, 0), (ResMLP, 8)])
@pytest.mark.parametrize("aux_head", [False, True])
@pytest.mark.parametrize("time_input", TIME_INPUTS)
def test_jvp_matches_central_difference(cls, input_fourier, aux_head, time_input):
    model = make_model(cls, time_input, aux_head, input_fourier=input_fourier)
    x, e, r, t = batch()
    z, _ = interpolate(x, e, t)
    v = model.velocity(z, t).detach()  # the tangent iMF uses, in either boundary mode
    u, dudt = total_derivative(model, z, r, t, v)
    h = 1e-5
    with torch.no_grad():
        fd = (model(z + h * v, r, t + h) - model(z - h * v, r, t - h)) / (2 * h)
        assert torch.allclose(u, model(z, r, t), atol=1e-12)
    assert torch.allclose(dudt, fd, rtol=1e-6, atol=1e-8)
    assert dudt.abs().max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("aux_head", [False, True])
def test_compound_equals_u_when_r_equals_t(aux_head):
    model = make_model(MLP, "t,t-r", aux_head)
    x, e, _, t = batch()
    z, _ = interpolate(x, e, t)
    V, u = compound_velocity(model, z, t, t, model.velocity(z, t).detach())
    assert torch.equal(V, u)
    if not aux_head:  # shared: u(z, t, t) is the instantaneous velocity itself
        assert torch.allclose(u, model.velocity(z, t), atol=1e-12)


@pytest.mark.parametrize("aux_head", [False, True])
def test_stop_gradient_on_jvp_output(aux_head):
    """d loss / d theta equals the gradient with du/dt replaced by a constant (no 2nd order)."""
    model = make_model(ResMLP, "t,t-r", aux_head)
    boundary = BoundaryMode(aux_head=aux_head, aux_weight=0.5)
    x, e, r, t = batch()
    objective = IMF(norm_p=1.0, norm_eps=0.01)
    loss, _ = objective(model, x, e, r, t, boundary)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    z, v_tgt = interpolate(x, e, t)
    with torch.no_grad():
        tangent = model.velocity(z, t)
        _, dudt_const = total_derivative(model, z, r, t, tangent)
    ref = objective.metric(model(z, r, t) + (t - r)[:, None] * dudt_const - v_tgt)
    if aux_head:
        ref = ref + 0.5 * objective.metric(model.velocity(z, t) - v_tgt)
    assert torch.allclose(loss, ref, rtol=1e-12)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()), allow_unused=True)
    for g, rg in zip(grads, ref_grads):
        if rg is None:
            assert g is None or torch.count_nonzero(g) == 0
        else:
            assert torch.allclose(g, rg, rtol=1e-9, atol=1e-12)
    # the auxiliary head is trained only in aux_head mode
    if aux_head:
        assert grads[-1] is not None and grads[-1].abs().sum() > 0


def test_imf_loss_value_against_finite_differences():
    model = make_model(MLP, "t,r", False)
    x, e, r, t = batch(32)
    loss, logs = IMF(norm_p=0.0)(model, x, e, r, t, BoundaryMode())
    z = (1 - t)[:, None] * x + t[:, None] * e
    h = 1e-5
    with torch.no_grad():
        v = model(z, t, t)
        dudt = (model(z + h * v, r, t + h) - model(z - h * v, r, t - h)) / (2 * h)
        V = model(z, r, t) + (t - r)[:, None] * dudt
        expected = ((V - (e - x)) ** 2).sum(1).mean()
    assert abs(loss.item() - expected.item()) < 1e-7
    assert set(logs) == {"loss", "loss_u", "err_u"}  # err_u: the unweighted error, here the loss
    assert abs(logs["err_u"].item() - expected.item()) < 1e-7


def test_meanflow_and_flow_matching_targets():
    model = make_model(MLP, "t,t-r", False)
    x, e, r, t = batch(32)
    z = (1 - t)[:, None] * x + t[:, None] * e
    v = e - x
    h = 1e-5
    with torch.no_grad():
        dudt = (model(z + h * v, r, t + h) - model(z - h * v, r, t - h)) / (2 * h)
        mf = ((model(z, r, t) - (v - (t - r)[:, None] * dudt)) ** 2).sum(1).mean()
        fm = ((model(z, t, t) - v) ** 2).sum(1).mean()
    loss_mf, _ = MeanFlow(norm_p=0.0)(model, x, e, r, t, BoundaryMode())
    loss_fm, _ = FlowMatching(norm_p=0.0)(model, x, e, r, t, BoundaryMode())
    assert abs(loss_mf.item() - mf.item()) < 1e-7
    assert abs(loss_fm.item() - fm.item()) < 1e-12


def test_adaptive_metric_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    sq = delta.detach().pow(2).sum(1)
    assert torch.allclose(adaptive_metric(delta, 0.0, 0.01), sq.mean())
    for p, c in [(1.0, 0.01), (0.5, 0.1), (1.5, 1e-3)]:
        value = adaptive_metric(delta, p, c)
        assert torch.allclose(value, (sq / (sq + c) ** p).mean())
        (grad,) = torch.autograd.grad(value, delta)
        # the weight is a constant: d/d delta = 2 delta / (L + c)^p / batch
        expected = 2 * delta.detach() / (sq + c)[:, None] ** p / len(delta)
        assert torch.allclose(grad, expected)


def test_the_unweighted_error_is_logged_beside_the_weighted_loss():
    """With adaptive weighting (p = 1) the loss is mean L / sg(L + c) (near 1 by construction);
    err_u is mean L itself, what the weighting rescales: the figure shows both."""
    model = make_model(MLP, "t,t-r", False)
    x, e, r, t = batch()
    _, logs = IMF(norm_p=1.0, norm_eps=0.01)(model, x, e, r, t, BoundaryMode())
    z, _ = interpolate(x, e, t)
    v = model.velocity(z, t).detach()
    V, _ = compound_velocity(model, z, r, t, v)
    sq = ((V - (e - x)) ** 2).sum(1)
    assert logs["err_u"].item() == pytest.approx(sq.mean().item(), rel=1e-9)
    assert logs["loss_u"].item() == pytest.approx((sq / (sq + 0.01)).mean().item(), rel=1e-9)
