"""Draw samples from a trained run folder.

    python -m imf_exp.sample RUN_DIR [n=5000] [nfe=1] [out=PATH] [seed=0] [weights=ema]
                                     [coords=native] [device=auto] [ode_method=euler]
                                     [class=mix] [omega=1] [interval=0,1]

* ``nfe``: average-velocity jumps (1 = one step); for a flow-matching run, ODE steps on ``v``.
* ``out``: ``.npy`` (an ``(n, dim)`` array in ``coords``) or ``.npz`` (both ``native`` and
  ``standardized``); default ``RUN_DIR/samples/sample_nfe{nfe}_n{n}_seed{seed}.npz``.
* ``weights``: ``ema`` (default, as in evaluation) or ``raw`` (the trained weights).
* ``coords``: ``native`` (the dataset's own coordinates) or ``standardized`` (for ``.npy``).
* guided runs (``guidance=cfg``) only: ``class``: a label ``k``, ``null`` (unconditional),
  ``mix`` (uniform over the classes) or comma-separated class weights (``0.7,0.3``);
  ``omega`` (>= 1) and the CFG ``interval`` ``t_lo,t_hi``. Still ``nfe`` network evaluations.
  ``.npz`` outputs then also hold the ``labels``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from imf_exp.errors import ConfigError, check
from imf_exp.trainer import CHECKPOINT, select_device

DEFAULTS = {"n": "5000", "nfe": "1", "out": "", "seed": "0", "weights": "ema", "coords": "native",
            "device": "auto", "ode_method": "euler", "class": "mix", "omega": "1", "interval": "0,1"}
GUIDED_ONLY = ("class", "omega", "interval")


def parse_run_args(argv: list[str], defaults: dict[str, str],
                   usage: str) -> tuple[Path, dict[str, str], set[str]]:
    """``RUN_DIR key=value ...`` -> the folder, every argument (defaults filled in) and the keys
    given on the command line. Raises :class:`ConfigError` with ``usage`` or the bad argument."""
    if not argv or "=" in argv[0] or argv[0] in ("-h", "--help"):
        raise ConfigError(usage)
    args, given = dict(defaults), set()
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"unknown argument {item!r}: expected key=value with key in {sorted(defaults)}")
        args[key] = value
        given.add(key)
    return Path(argv[0]), args, given


def parse_args(argv: list[str]) -> tuple[Path, dict[str, str], set[str]]:
    return parse_run_args(argv, DEFAULTS, "usage: python -m imf_exp.sample RUN_DIR [key=value ...]; keys: "
                          + ", ".join(f"{k} (default {v!r})" for k, v in DEFAULTS.items()))


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
            check(len(weights) == num_classes and bool((weights >= 0).all()) and weights.sum() > 0,
                  "class", spec, allowed)
            return torch.multinomial(weights, n, replacement=True, generator=generator)
        label = int(spec)
    except ValueError:
        raise ConfigError(f"class={spec!r} is not allowed: {allowed}") from None
    check(0 <= label < num_classes, "class", spec, allowed)
    return torch.full((n,), label, dtype=torch.long)


def parse_condition(args: dict[str, str], n: int, num_classes: int, generator: torch.Generator):
    """The guidance condition of ``class``, ``omega`` and ``interval``."""
    from imf_exp.objectives.guidance import Condition

    labels = sample_labels(args["class"], n, num_classes, generator)
    try:
        omega = float(args["omega"])
        interval = [float(v) for v in args["interval"].split(",")]
    except ValueError:
        raise ConfigError(f"omega={args['omega']!r} / interval={args['interval']!r}: omega is a "
                          "number >= 1, interval two numbers t_lo,t_hi in [0, 1]") from None
    check(len(interval) == 2, "interval", args["interval"], "two numbers t_lo,t_hi")
    return Condition.build(labels, omega, interval)  # checks the ranges


def _int(args: dict[str, str], key: str, low: int) -> int:
    try:
        value = int(args[key])
    except ValueError:
        raise ConfigError(f"{key}={args[key]!r} is not allowed: an int >= {low}") from None
    check(value >= low, key, value, f"an int >= {low}")
    return value


def load_run(run_dir: Path, weights: str = "ema", device: str = "auto"):
    """Rebuild ``(cfg, parts, model)`` of a run folder from its config and checkpoint."""
    from imf_exp.train import build, complete_saved_config

    if not run_dir.is_dir():
        raise ConfigError(f"run folder {str(run_dir)!r} does not exist")
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path} is missing: {run_dir} is not a run folder of imf_exp.train")
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.is_file():
        raise ConfigError(f"{ckpt_path} is missing: the run has not written a checkpoint yet")
    cfg = complete_saved_config(OmegaConf.load(cfg_path))
    parts = build(cfg)
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"{ckpt_path} is not a readable checkpoint ({err})") from None
    model = parts["model"]
    model.load_state_dict(state["ema" if weights == "ema" else "model"])
    model = model.to(select_device(device)).eval()
    return cfg, parts, model, int(state["step"])


def main(argv: list[str] | None = None) -> int:
    from imf_exp.sampling import generate

    argv = sys.argv[1:] if argv is None else argv
    try:
        run_dir, args, given = parse_args(argv)
        n, nfe, seed = _int(args, "n", 1), _int(args, "nfe", 1), _int(args, "seed", 0)
        check(args["weights"] in ("ema", "raw"), "weights", args["weights"], "'ema' or 'raw'")
        check(args["coords"] in ("native", "standardized"), "coords", args["coords"],
              "'native' or 'standardized'")
        out = Path(args["out"]) if args["out"] else (
            run_dir / "samples" / f"sample_nfe{nfe}_n{n}_seed{seed}.npz")
        check(out.suffix in (".npy", ".npz"), "out", str(out), "a path ending in .npy or .npz")
        cfg, parts, model, step = load_run(run_dir, args["weights"], args["device"])
        guided = parts["guidance"].enabled
        guided_args = [k for k in GUIDED_ONLY if k in given]
        if not guided and guided_args:
            raise ConfigError(f"{guided_args} apply to guided runs only; this run was trained "
                              "with guidance=none")
        dataset, device = parts["dataset"], next(model.parameters()).device
        g = torch.Generator().manual_seed(seed)
        z1 = torch.randn(n, dataset.dim, generator=g).to(device)
        cond = parse_condition(args, n, dataset.num_classes, g) if guided else None
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    x = generate(model, z1, parts["objective"].sampling, nfe, args["ode_method"],
                 None if cond is None else cond.to(device)).float().cpu()
    native = dataset.destandardize(x.double()).float().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        extra = {} if cond is None else {"labels": cond.labels.numpy()}
        np.savez(out, native=native, standardized=x.numpy(), **extra)
    else:
        np.save(out, native if args["coords"] == "native" else x.numpy())
    print(f"wrote {n} samples ({nfe} NFE, {args['weights']} weights, step {step}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
