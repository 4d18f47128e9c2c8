"""The fused update is PyTorch's clip + Adam/AdamW + EMA to float32 rounding, resumes exactly
and keeps PyTorch's state-dict layout; the optimizer spec's schedule and fused kernel."""

import math

import pytest
import torch

from imf_exp.optim import FusedUpdate, OptimizerSpec
from imf_exp.trainer import ema_decay_at

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def eager_update(spec, params, ema, steps, grads):
    """PyTorch's own path, spelled out: clip_grad_norm_, optimizer + scheduler step, foreach EMA."""
    opt, sched = spec.build(params, 50)
    clip = spec.grad_clip if spec.grad_clip > 0 else float("inf")
    norms = []
    for k in range(steps):
        for p, g in zip(params, grads[k]):
            p.grad = g.clone()
        norms.append(torch.nn.utils.clip_grad_norm_(params, clip, foreach=True))
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - ema_decay_at(k, 0.99))
    return opt, norms


def fused_update(spec, params, ema, steps, grads, compile):
    opt, sched = spec.build(params, 50)
    update = FusedUpdate(opt, params, ema, spec, compile=compile)
    norms = []
    for k in range(steps):
        for p, g in zip(params, grads[k]):
            p.grad = g.clone()
        norms.append(update(ema_decay_at(k, 0.99)))
        sched.step()
    return opt, norms


@pytest.mark.parametrize("name,weight_decay,grad_clip,compile", [
    ("adam", 0.0, 1.0, True),  # the default optimizer, compiled as the trainer runs it
    ("adam", 0.1, 0.5, False),  # L2 weight decay, clipping active
    ("adamw", 0.1, 0.0, False),  # decoupled weight decay, no clipping
    ("adamw", 0.0, 100.0, False),  # clip above the norm: no clipping
])
def test_fused_update_equals_the_eager_path(name, weight_decay, grad_clip, compile):
    """Six steps with random gradients (warm-up and cosine schedule under way): parameters, EMA,
    both moments, the step count and the reported norms agree with PyTorch's own path."""
    spec = OptimizerSpec(name=name, lr=3e-2, weight_decay=weight_decay, grad_clip=grad_clip,
                         warmup_steps=3, schedule="cosine")
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (3,), (2, 4)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[3 * torch.randn(s, generator=gen) for s in shapes] for _ in range(6)]
    runs = []
    for fused in (False, True):
        params = [torch.nn.Parameter(w.clone()) for w in start]
        ema = [w.clone() for w in start]
        run = (fused_update(spec, params, ema, 6, grads, compile) if fused
               else eager_update(spec, params, ema, 6, grads))
        runs.append((params, ema, *run))
    (p0, e0, opt0, n0), (p1, e1, opt1, n1) = runs
    for a, b in zip(p0 + e0, p1 + e1, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
        assert not torch.equal(a, torch.zeros_like(a))
    assert max(float((a.detach() - w).abs().max()) for a, w in zip(p0, start)) > 1e-2  # it did move
    torch.testing.assert_close(torch.stack(n0), torch.stack(n1), rtol=1e-5, atol=1e-6)
    for q0, q1 in zip(p0, p1, strict=True):
        s0, s1 = opt0.state[q0], opt1.state[q1]
        assert float(s0["step"]) == float(s1["step"]) == 6
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(s0[key], s1[key], rtol=1e-5, atol=1e-7)
    # the state dict has PyTorch's layout: the eager optimizer loads it and carries on
    opt0.load_state_dict(opt1.state_dict())
    assert math.isclose(opt1.param_groups[0]["lr"], opt0.param_groups[0]["lr"])


def test_fused_update_takes_over_replaced_tensors_and_resumes_exactly():
    """Everything lives in flat buffers; what replaces a view (PyTorch's ``load_state_dict``
    of the optimizer, fresh ``.grad`` tensors after ``zero_grad(set_to_none=True)``, a new
    parameter tensor) is copied in on the next call. A run resumed from a state dict through a
    fresh optimizer continues exactly as the uninterrupted one."""
    import copy

    spec = OptimizerSpec(name="adamw", lr=1e-1, weight_decay=0.1, warmup_steps=0, grad_clip=0.5)
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(3, 5, generator=gen), torch.randn(7, generator=gen)]
    grads = [[torch.randn_like(w) for w in start] for _ in range(4)]

    def make(values):
        params = [torch.nn.Parameter(w.clone()) for w in values]
        ema = [w.clone() for w in values]
        opt, _ = spec.build(params, 10)
        return params, ema, opt, FusedUpdate(opt, params, ema, spec, compile=False)

    params, ema, opt, update = make(start)
    assert all(p.data_ptr() == v.data_ptr() for p, v in zip(params, update.p_views))
    for k in range(4):
        if k == 2:  # checkpoint after two steps, then carry on
            saved = (copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params],
                     [e.clone() for e in ema])
        update.zero_grad()
        for p, g in zip(params, grads[k]):
            p.grad += g  # what backward does: accumulate into the existing (view) gradient
        update(0.9)
    # resume: fresh tensors and optimizer, PyTorch's load_state_dict, then the last two steps
    state, p_saved, e_saved = saved
    params2, ema2, opt2, _ = make(p_saved)
    for e, s in zip(ema2, e_saved):
        e.copy_(s)
    opt2.load_state_dict(state)  # replaces the moments by copies: relinked on the next call
    update2 = FusedUpdate(opt2, params2, ema2, spec, compile=False)
    for k in (2, 3):
        opt2.zero_grad(set_to_none=True)  # PyTorch's way: fresh .grad tensors, copied in
        for p, g in zip(params2, grads[k]):
            p.grad = g.clone()
        update2(0.9)
    for a, b in zip(params + ema, params2 + ema2, strict=True):
        assert torch.equal(a.detach(), b.detach())
    assert float(opt2.state[params2[0]]["step"]) == 4
    assert opt2.state[params2[1]]["exp_avg"].data_ptr() == update2.m_views[1].data_ptr()
    # the state dict has one step tensor per parameter: PyTorch's own Adam carries on from it
    state = opt2.state_dict()
    assert state["state"][0]["step"] is not state["state"][1]["step"]
    plain = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params2], lr=1e-1,
                              weight_decay=0.1, foreach=True)
    plain.load_state_dict(copy.deepcopy(state))
    for q in plain.param_groups[0]["params"]:
        q.grad = torch.ones_like(q)
    plain.step()
    assert [float(plain.state[q]["step"]) for q in plain.param_groups[0]["params"]] == [5.0, 5.0]


def test_fused_zero_grad_drops_a_replaced_gradient():
    """``.grad`` put in place of a view (PyTorch's ``zero_grad`` then a backward) is dropped by
    :meth:`FusedUpdate.zero_grad`: the next backward starts from zero, not from the old value."""
    spec = OptimizerSpec(lr=1e-1, warmup_steps=0)
    w = torch.nn.Parameter(torch.ones(3))
    opt, _ = spec.build([w], 10)
    update = FusedUpdate(opt, [w], [w.detach().clone()], spec, compile=False)
    opt.zero_grad(set_to_none=True)
    (1.0 * w).sum().backward()  # a fresh .grad tensor, not the view
    update.zero_grad()
    (2.0 * w).sum().backward()
    assert torch.equal(w.grad, torch.full((3,), 2.0)) and w.grad is update.g_views[0]


def test_fused_update_steps_a_parameter_without_gradient_with_zero():
    """Documented difference from ``torch.optim``: no gradient counts as a zero gradient (with
    fresh moments and no weight decay the parameter stays where it is)."""
    spec = OptimizerSpec(lr=1e-1, warmup_steps=0)
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt, _ = spec.build([a, b], 10)
    ema = [a.detach().clone(), b.detach().clone()]
    a.grad = torch.ones(3)
    FusedUpdate(opt, [a, b], ema, spec, compile=False)(0.5)
    assert torch.all(a < 1) and torch.equal(b.detach(), torch.ones(2))
    assert torch.all(ema[0] < 1) and torch.equal(ema[1], torch.ones(2))
    assert torch.equal(opt.state[b]["exp_avg"], torch.zeros(2))


def test_fused_optimizer_matches_foreach():
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(5, 3))
        opt, sched = OptimizerSpec(lr=1e-2, fused=fused).build([w], 100)
        for _ in range(20):
            loss = (w ** 3).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        results.append(w.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6) and not torch.equal(results[0], torch.zeros(5, 3))
