"""Optimizer, learning-rate schedule and gradient clipping in one config node."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from imf_exp.config import AdamConfig, default
from imf_exp.errors import check

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "cosine", "linear")


class OptimizerSpec:
    """Builds the optimizer and a ``LambdaLR`` schedule: linear warm-up over ``warmup_steps``,
    then ``constant``, ``cosine`` or ``linear`` decay to ``min_lr_ratio * lr`` at the last step.
    ``grad_clip > 0`` clips the global gradient norm. ``fused``: PyTorch's fused Adam/AdamW
    kernel (one kernel for all parameters; CPU and CUDA) instead of the ``foreach`` one; same
    math, different rounding."""

    def __init__(self, name: str = default(AdamConfig, "name"), lr: float = default(AdamConfig, "lr"),
                 betas: Sequence[float] = default(AdamConfig, "betas"),
                 eps: float = default(AdamConfig, "eps"),
                 weight_decay: float = default(AdamConfig, "weight_decay"),
                 warmup_steps: int = default(AdamConfig, "warmup_steps"),
                 schedule: str = default(AdamConfig, "schedule"),
                 min_lr_ratio: float = default(AdamConfig, "min_lr_ratio"),
                 grad_clip: float = default(AdamConfig, "grad_clip"),
                 fused: bool = default(AdamConfig, "fused")) -> None:
        check(name in OPTIMIZERS, "optimizer.name", name, f"one of {sorted(OPTIMIZERS)}")
        check(lr > 0, "optimizer.lr", lr, "a number > 0")
        check(len(betas) == 2 and all(0 <= b < 1 for b in betas), "optimizer.betas", list(betas),
              "two numbers in [0, 1)")
        check(eps > 0, "optimizer.eps", eps, "a number > 0")
        check(weight_decay >= 0, "optimizer.weight_decay", weight_decay, "a number >= 0")
        check(warmup_steps >= 0, "optimizer.warmup_steps", warmup_steps, "an int >= 0")
        check(schedule in SCHEDULES, "optimizer.schedule", schedule, f"one of {list(SCHEDULES)}")
        check(0 <= min_lr_ratio <= 1, "optimizer.min_lr_ratio", min_lr_ratio, "a number in [0, 1]")
        check(grad_clip >= 0, "optimizer.grad_clip", grad_clip, "a number >= 0 (0 disables)")
        self.name, self.lr, self.betas, self.eps = name, float(lr), tuple(betas), float(eps)
        self.weight_decay, self.warmup_steps = float(weight_decay), int(warmup_steps)
        self.schedule, self.min_lr_ratio, self.grad_clip = schedule, float(min_lr_ratio), float(grad_clip)
        self.fused = bool(fused)

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of ``lr`` at optimizer step ``step`` (0-based)."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.schedule == "constant":
            return warm
        frac = min(1.0, step / max(1, total_steps - 1))
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1 - frac
        return warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * shape)

    @property
    def max_grad_norm(self) -> float:
        """The clipping threshold (``inf`` when ``grad_clip = 0`` turns clipping off)."""
        return self.grad_clip if self.grad_clip > 0 else math.inf

    def updater(self, opt: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                ema_params: Sequence[torch.Tensor], fused: bool = False) -> EagerUpdate | FusedUpdate:
        """What a training step calls after ``backward``: clip, optimizer step, EMA update
        (:class:`FusedUpdate` with ``trainer.fused_update=true``, else :class:`EagerUpdate`)."""
        return (FusedUpdate if fused else EagerUpdate)(opt, params, ema_params, self)

    def build(self, params: Iterable[torch.nn.Parameter], total_steps: int
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        opt = OPTIMIZERS[self.name](params, lr=self.lr, betas=self.betas, eps=self.eps,
                                    weight_decay=self.weight_decay,
                                    **({"fused": True} if self.fused else {"foreach": True}))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self.lr_factor(s, total_steps))
        return opt, sched


class EagerUpdate:
    """PyTorch's own path: ``clip_grad_norm_`` (foreach), ``optimizer.step()`` and a foreach EMA
    lerp ``ema <- ema + (1 - decay) (p - ema)``. ``zero_grad`` and ``__call__`` as in
    :class:`FusedUpdate`; the LR scheduler is stepped by the caller."""

    def __init__(self, opt: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                 ema_params: Sequence[torch.Tensor], spec: OptimizerSpec) -> None:
        self.opt, self.params, self.ema = opt, list(params), list(ema_params)
        self.clip = spec.max_grad_norm

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def __call__(self, ema_decay: float) -> torch.Tensor:
        """One update with the gradients in ``p.grad``; returns the global norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1.0 - ema_decay)
        return norm


class FusedUpdate:
    """Gradient clipping, the Adam/AdamW step and the EMA update as one compiled function over
    flat buffers (``trainer.fused_update=true``).

    The eager path is three library calls (``clip_grad_norm_``, ``optimizer.step``,
    ``_foreach_lerp_``) over every parameter tensor, each a handful of kernels plus Python; on a
    small model that overhead is a large part of a step. Here the parameters, their gradients,
    the EMA copy and both Adam moments each live in one flat buffer (every tensor a view into
    it, 64-element aligned, zero padding between), and one ``torch.compile``d function updates
    the five vectors::

        n = ||g||,  g <- g * min(1, clip / (n + 1e-6))
        adam:  g <- g + wd * p            adamw:  p <- p * (1 - lr * wd)
        m <- m + (1 - b1) (g - m),  v <- b2 v + (1 - b2) g^2,  s <- s + 1
        p <- p - lr / (1 - b1^s) * m / (sqrt(v) / sqrt(1 - b2^s) + eps)
        ema <- ema + (1 - decay) (p - ema)

    These are PyTorch's formulas and order (``torch.optim.Adam``/``AdamW``, non-amsgrad), with
    the bias corrections in float64 on the device instead of on the host: equal to
    :class:`EagerUpdate` to float32 rounding (tested). The moments and the step count stay in the
    optimizer's ``state`` under PyTorch's keys (``exp_avg``, ``exp_avg_sq``, ``step``), so its
    ``state_dict`` (checkpoints, resume) has PyTorch's layout; ``optimizer.step()`` is never
    called. The learning rate is read from the param group (the LR scheduler still steps) into
    a 0-d tensor: no recompilation as it changes. Unlike ``torch.optim``, a parameter that got
    no gradient is stepped with a zero gradient (its moments decay).

    Anything that replaces a parameter's data, its ``.grad`` or the optimizer's state tensors
    (``load_state_dict``, a ``zero_grad(set_to_none=True)``) is noticed on the next call and the
    values are copied back into the buffers; :meth:`zero_grad` zeroes the gradients in place.
    """

    ALIGN = 64  # elements: every view starts 256-byte aligned

    def __init__(self, opt: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                 ema_params: Sequence[torch.Tensor], spec: OptimizerSpec, compile: bool = True) -> None:
        check(len(opt.param_groups) == 1, "optimizer", len(opt.param_groups),
              "one param group for trainer.fused_update")
        self.opt, self.params, self.ema = opt, list(params), list(ema_params)
        kinds = {(p.device, p.dtype) for p in self.params + self.ema}
        check(len(kinds) == 1, "trainer.fused_update", sorted(map(str, kinds)),
              "every parameter and EMA tensor on one device with one dtype")
        self.decoupled = spec.name == "adamw"
        self.b1, self.b2 = spec.betas
        self.eps, self.wd = spec.eps, spec.weight_decay
        self.clip = spec.max_grad_norm
        device, dtype = next(iter(kinds))
        offsets, total = [], 0
        for p in self.params:
            offsets.append(total)
            total += -(-p.numel() // self.ALIGN) * self.ALIGN

        def buffer():
            flat = torch.zeros(total, device=device, dtype=dtype)
            return flat, [flat[o:o + p.numel()].view_as(p) for o, p in zip(offsets, self.params)]

        (self.flat_p, self.p_views), (self.flat_e, self.e_views) = buffer(), buffer()
        (self.flat_g, self.g_views) = buffer()
        (self.flat_m, self.m_views), (self.flat_v, self.v_views) = buffer(), buffer()
        self.step = torch.zeros((), device=device, dtype=torch.float32)
        self.lr = torch.zeros((), device=device)
        self.ema_weight = torch.zeros((), device=device)  # 1 - decay, worked out on the host
        self._link()
        # the live state shares one step tensor; a state dict gets one per parameter, as
        # PyTorch's own optimizers keep it (else a plain Adam loading it would add 1 per tensor)
        opt.register_state_dict_post_hook(_own_step_per_parameter)
        if compile:
            from imf_exp.compile import cpu_options  # inductor is imported only when compiling

            self._fn = torch.compile(self._update, options=cpu_options(device))
        else:
            self._fn = self._update

    def _link(self) -> None:
        """Make every tensor a view into its buffer again, copying in what was put in its place."""
        state = self.opt.state
        for p, e, pv, ev, gv, m, v in zip(self.params, self.ema, self.p_views, self.e_views,
                                          self.g_views, self.m_views, self.v_views):
            st = state[p]
            if (p.grad is gv and st.get("exp_avg") is m and st.get("exp_avg_sq") is v
                    and st.get("step") is self.step and p.data_ptr() == pv.data_ptr()
                    and e.data_ptr() == ev.data_ptr()):
                continue  # the common case: nothing was replaced
            with torch.no_grad():
                if p.data_ptr() != pv.data_ptr():
                    pv.copy_(p)
                    p.data = pv
                if e.data_ptr() != ev.data_ptr():
                    ev.copy_(e)
                    e.data = ev
            if p.grad is not gv:
                if p.grad is None:
                    gv.zero_()
                else:
                    gv.copy_(p.grad)
                p.grad = gv
            if st.get("exp_avg") is not m or st.get("exp_avg_sq") is not v or st.get("step") is not self.step:
                if st:  # PyTorch's (or a loaded) state: take it over
                    if st["exp_avg"] is not m:
                        m.copy_(st["exp_avg"])
                    if st["exp_avg_sq"] is not v:
                        v.copy_(st["exp_avg_sq"])
                    if st["step"] is not self.step:
                        self.step.copy_(st["step"])
                else:
                    m.zero_()
                    v.zero_()
                st.update(step=self.step, exp_avg=m, exp_avg_sq=v)

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero every gradient in place (one kernel). ``set_to_none`` is ignored (it is there so
        this stands in for ``optimizer.zero_grad``): the gradients are views into one buffer
        (a ``.grad`` put in a view's place is dropped for the view)."""
        for p, gv in zip(self.params, self.g_views):
            if p.grad is not gv:
                p.grad = gv
        self.flat_g.zero_()

    @torch.no_grad()
    def _update(self, p, g, m, v, e, s, lr, ema_weight):
        norm = torch.linalg.vector_norm(g)
        g = g * torch.clamp(self.clip / (norm + 1e-6), max=1.0)
        b1, b2 = self.b1, self.b2
        if self.wd and not self.decoupled:
            g = g + self.wd * p
        if self.wd and self.decoupled:
            p.mul_(1 - lr * self.wd)
        s.add_(1)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        s64 = s.double()  # bias corrections in float64, as PyTorch works them out on the host
        step_size = (lr.double() / (1 - b1 ** s64)).to(p.dtype)
        bc2_sqrt = torch.sqrt(1 - b2 ** s64).to(p.dtype)
        p.sub_(step_size * m / (v.sqrt() / bc2_sqrt + self.eps))
        e.lerp_(p, ema_weight)
        return norm

    def __call__(self, ema_decay: float) -> torch.Tensor:
        """One update with the gradients in ``p.grad``; returns the global norm before clipping."""
        self._link()
        self.lr.fill_(self.opt.param_groups[0]["lr"])
        self.ema_weight.fill_(1.0 - ema_decay)
        self.opt._opt_called = True  # what the LR scheduler checks to know the optimizer stepped
        return self._fn(self.flat_p, self.flat_g, self.flat_m, self.flat_v, self.flat_e,
                        self.step, self.lr, self.ema_weight)


def _own_step_per_parameter(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """State-dict hook of :class:`FusedUpdate`'s optimizer: each parameter's entry gets its own
    copy of the shared step tensor (new dicts: ``state_dict`` hands out the live ones)."""
    state_dict["state"] = {k: {**v, "step": v["step"].detach().clone()} if "step" in v else v
                           for k, v in state_dict["state"].items()}
    return state_dict
