"""Draw samples from a trained run folder (a Hydra app, ``conf/sample.yaml``).

    python -m imf_exp.sample RUN_DIR [n=5000] [nfe=1] [out=PATH] [seed=0] [weights=ema]
                                     [coords=native] [device=auto] [ode_method=euler]
                                     [class=mix] [omega=1] [interval=0,1]

* ``nfe``: average-velocity jumps (1 = one step); for a flow-matching run, ODE steps on ``v``
  (``ode_method`` ``euler`` or ``midpoint``; flow-matching runs only).
* ``out``: ``.npy`` (an ``(n, dim)`` array in ``coords``) or ``.npz`` (both ``native`` and
  ``standardized``); default ``RUN_DIR/samples/sample_nfe{nfe}_n{n}_seed{seed}.npz`` (guided
  runs add the class, omega and interval to the name).
* ``weights``: ``ema`` (default, as in evaluation) or ``raw`` (the trained weights).
* ``coords``: ``native`` (the dataset's own coordinates) or ``standardized`` (for ``.npy``).
* guided runs (``guidance=cfg``) only: ``class``: a label ``k``, ``null`` (unconditional),
  ``mix`` (uniform over the classes, the default) or comma-separated class weights
  (``0.7,0.3``); ``omega`` (>= 1, default 1) and the CFG ``interval`` ``t_lo,t_hi`` (default
  ``0,1``). Still ``nfe`` network evaluations. ``.npz`` outputs then also hold the ``labels``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from imf_exp.cli import hydra_app
from imf_exp.cli import run as run_app
from imf_exp.condition import Condition
from imf_exp.config import register_configs
from imf_exp.errors import ConfigError, check
from imf_exp.run_dir import RunDir, atomic_write, check_writable
from imf_exp.sampling import generate

GUIDED_ONLY = ("class", "omega", "interval")
register_configs()


def sample_labels(spec: str, n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Labels for ``n`` guided samples from ``class=``: ``k``, ``null``, ``mix`` or weights."""
    allowed = f"an int in [0, {num_classes - 1}], 'null', 'mix' or {num_classes} comma-separated weights"
    if spec == "null":
        return torch.full((n,), num_classes, dtype=torch.long)
    if spec == "mix":
        return torch.randint(0, num_classes, (n,), generator=generator)
    try:
        if "," in spec:
            weights = torch.tensor([float(w) for w in spec.split(",")], dtype=torch.float64)
            check(len(weights) == num_classes and bool((weights >= 0).all()) and weights.sum() > 0
                  and bool(torch.isfinite(weights).all()), "class", spec, allowed)
            return torch.multinomial(weights, n, replacement=True, generator=generator)
        label = int(spec)
    except ValueError:
        raise ConfigError(f"class={spec!r} is not allowed: {allowed}") from None
    check(0 <= label < num_classes, "class", spec, allowed)
    return torch.full((n,), label, dtype=torch.long)


def default_out(run: RunDir, cfg: DictConfig, guided: bool) -> Path:
    """``RUN/samples/sample_nfe{nfe}_n{n}_seed{seed}[_class{c}_omega{w}[_interval{a}-{b}]].npz``:
    a guided draw of another class or scale never overwrites the previous one."""
    name = f"sample_nfe{cfg.nfe}_n{cfg.n}_seed{cfg.seed}"
    if guided:
        label = str(cfg["class"] or "mix").replace(",", "-")
        name += f"_class{label}_omega{1.0 if cfg.omega is None else cfg.omega:g}"
        if cfg.interval is not None:
            name += "_interval" + "-".join(f"{v:g}" for v in cfg.interval)
    return run.samples / f"{name}.npz"


def sample(cfg: DictConfig) -> Path:
    """Draw ``cfg.n`` samples from the run folder ``cfg.run`` and write them; returns the path.
    Raises :class:`ConfigError` (naming the key) before any work for a bad argument."""
    check(cfg.n >= 1 and cfg.n <= 10_000_000, "n", cfg.n, "an int in [1, 10000000]")
    check(cfg.nfe >= 1 and cfg.nfe <= 100_000, "nfe", cfg.nfe, "an int in [1, 100000]")
    check(cfg.seed >= 0, "seed", cfg.seed, "an int >= 0")
    run = RunDir(cfg.run)
    loaded = run.load(cfg.weights, cfg.device)
    parts, model = loaded.parts, loaded.model
    guided = parts.guidance.enabled
    given = [k for k in GUIDED_ONLY if cfg[k] is not None]
    if not guided and given:
        raise ConfigError(f"{given} apply to guided runs only; this run was trained with guidance=none")
    kind = parts.objective.sampling
    if cfg.ode_method is not None and kind != "ode":
        raise ConfigError(f"ode_method={cfg.ode_method} applies to flow-matching runs only; this "
                          f"run samples with {cfg.nfe} average-velocity jump(s)")
    out = Path(cfg.out) if cfg.out else default_out(run, cfg, guided)
    check(out.suffix in (".npy", ".npz"), "out", str(out), "a path ending in .npy or .npz")
    check_writable(out.parent, "out" if cfg.out else "run")
    dataset, device = parts.dataset, next(model.parameters()).device
    g = torch.Generator().manual_seed(cfg.seed)
    z1 = torch.randn(cfg.n, dataset.dim, generator=g).to(device)
    cond = None
    if guided:
        labels = sample_labels(str(cfg["class"] or "mix"), cfg.n, dataset.num_classes, g)
        interval = list(cfg.interval) if cfg.interval is not None else [0.0, 1.0]
        check(len(interval) == 2, "interval", interval, "two numbers t_lo,t_hi")
        cond = Condition.build(labels, 1.0 if cfg.omega is None else float(cfg.omega), interval)
    x = generate(model, z1, kind, cfg.nfe, str(cfg.ode_method or "euler"),
                 None if cond is None else cond.to(device)).float().cpu()
    native = dataset.destandardize(x.double()).float()
    if out.suffix == ".npz":
        extra = {} if cond is None else {"labels": cond.labels.numpy()}
        run.save_samples(out.stem, x, native, out=out, **extra)
    else:
        values = (native if str(cfg.coords) == "native" else x).numpy()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda f: np.save(f, values))
    print(f"wrote {cfg.n} samples ({cfg.nfe} NFE, {cfg.weights} weights, step {loaded.step}) to {out}")
    return out


main = hydra_app("sample", sample)


def cli(argv: list[str] | None = None) -> None:
    run_app(main, "sample", argv, positional="run", lists=("interval",), strings=("class",))


if __name__ == "__main__":
    cli()
