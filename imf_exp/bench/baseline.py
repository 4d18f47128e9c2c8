"""The design note's training step, as printed (made runnable): the benchmark's baseline.

Its defects are kept on purpose, they are what is measured: ``make_moons`` on the host every
step, standardized by the batch's own statistics; ``r`` and ``t`` drawn independently; ``v``
computed with a graph; a per-sample ``vmap(jvp)``; ``loss.item()`` every step; plain Adam; a
Python EMA loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imf_exp.bench.timing import Step


def note_embedding(s: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of raw ``s`` in [0, 1]: every frequency is <= 1 rad per unit time."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=s.device) / half)
    angle = s[:, None] * freqs
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)


class NoteMLP(nn.Module):
    """``u(z, r, t)``: an MLP on ``[z, emb(r), emb(t)]``; ``depth`` hidden layers, SiLU."""

    def __init__(self, width: int = 64, depth: int = 3, embedding_dim: int = 64) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        layers, fan_in = [], 2 + 2 * embedding_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.SiLU()]
            fan_in = width
        self.net = nn.Sequential(*layers, nn.Linear(width, 2))

    def forward(self, z, r, t):
        emb = [note_embedding(r, self.embedding_dim), note_embedding(t, self.embedding_dim)]
        return self.net(torch.cat([z, *emb], dim=-1))


def make_note_step(model: NoteMLP, batch: int, device: torch.device) -> Step:
    """One training step of the design note (its defects kept: they are what is measured)."""
    from sklearn.datasets import make_moons
    from torch.func import jvp, vmap

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ema = [p.detach().clone() for p in model.parameters()]
    decay, losses = 0.999, []

    def u_single(z1, r1, t1):
        return model(z1[None], r1[None], t1[None])[0]

    def jvp_single(z1, r1, t1, v1):
        return jvp(u_single, (z1, r1, t1), (v1, torch.zeros_like(r1), torch.ones_like(t1)))

    def step() -> torch.Tensor:
        x = torch.tensor(make_moons(batch, noise=0.05)[0], dtype=torch.float32, device=device)
        x = (x - x.mean(0)) / x.std(0)  # per-batch standardization
        e = torch.randn_like(x)
        r = torch.rand(batch, device=device)  # r and t independent: r > t half the time
        t = torch.rand(batch, device=device)
        z = (1 - t[:, None]) * x + t[:, None] * e
        v = model(z, t, t)  # with a graph
        u, dudt = vmap(jvp_single)(z, r, t, v)  # per-sample JVP
        V = u + (t - r)[:, None] * dudt.detach()
        loss = ((V - (e - x)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())  # a host sync every step
        with torch.no_grad():
            for pe, p in zip(ema, model.parameters(), strict=True):
                pe.mul_(decay).add_(p, alpha=1 - decay)
        return loss.detach()

    return Step(step, model, [opt, ema])
