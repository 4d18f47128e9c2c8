"""Re-evaluate trained runs under several evaluation seeds (a Hydra app, ``conf/evaluate.yaml``).

    python -m imf_exp.evaluate RUN_OR_SWEEP_DIR [seeds=0,1,2,3,4] [n=2000] [weights=ema]
                                                [device=auto] [name=NAME]

A run's own metrics (``metrics.json``) come from one evaluation draw (``eval.seed``): one
reference set, one W2 floor, one noise batch ``z_1``. On 2-D data the W2 ratio at n = 2000
moves by about 0.2 (one std, moons) from one draw to the next for the *same* model, mostly
because the share of points per mode of a finite sample fluctuates. This command scores the
run's newest checkpoint with the run's own evaluation settings (samplers, ``floor_repeats``,
guidance) under each seed in ``seeds`` and writes ``RUN/eval/NAME.json``::

    {"step", "weights", "n", "seeds", "primary",
     "per_seed": [{metric: value}, ...], "mean": {metric: value}, "std": {metric: value}}

``std`` is the sample standard deviation over the seeds (ddof 1; 0 for one seed). Evaluation
seed ``s`` with the run's ``eval.n`` reproduces the run's own final metrics exactly when ``s`` is
its ``eval.seed``. Given a sweep folder, every completed job is evaluated in turn;
``python -m imf_exp.report SWEEP eval=NAME`` then tabulates the means.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from imf_exp.cli import hydra_app
from imf_exp.cli import run as run_app
from imf_exp.config import register_configs
from imf_exp.errors import ConfigError, check
from imf_exp.run_dir import CHECKPOINT, RunDir

register_configs()


def default_name(n: int, seeds: list[int]) -> str:
    return f"n{n}_seeds{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"n{n}_seed{seeds[0]}"


def evaluate_run(run: RunDir, seeds: list[int], n: int | None = None, weights: str = "ema",
                 device: str = "auto", name: str | None = None) -> tuple[Path, dict]:
    """Score ``run`` under each evaluation seed; write and return ``RUN/eval/NAME.json``."""
    loaded = run.load(weights, device)
    eval_cfg = OmegaConf.merge(loaded.cfg.eval, {"n": int(n) if n else int(loaded.cfg.eval.n)})
    per_seed = []
    for seed in seeds:
        evaluator = loaded.parts.evaluator(OmegaConf.merge(eval_cfg, {"seed": int(seed)}))
        with torch.no_grad():
            metrics, _ = evaluator(loaded.model)
        per_seed.append({k: float(v) for k, v in metrics.items()})
    keys = list(per_seed[0])
    mean = {k: math.fsum(m[k] for m in per_seed) / len(per_seed) for k in keys}
    std = {k: (math.sqrt(math.fsum((m[k] - mean[k]) ** 2 for m in per_seed) / (len(per_seed) - 1))
               if len(per_seed) > 1 else 0.0) for k in keys}
    result = {"step": loaded.step, "weights": str(weights), "n": int(eval_cfg.n),
              "seeds": [int(s) for s in seeds], "primary": evaluator.primary,
              "per_seed": per_seed, "mean": mean, "std": std}
    return run.write_eval(name or default_name(int(eval_cfg.n), list(seeds)), result), result


def _jobs(path: Path) -> list[RunDir]:
    """The run folder itself, or every job of a sweep folder that completed."""
    if (path / CHECKPOINT).is_file() or (path / ".hydra" / "config.yaml").is_file():
        return [RunDir(path)]
    jobs = sorted((RunDir(p.parent) for p in path.glob("*/metrics.json")),
                  key=lambda r: (0, int(r.path.name), "") if r.path.name.isdigit() else (1, 0, r.path.name))
    done = [run for run in jobs if (run.read_metrics() or {}).get("status") == "completed"]
    if not done:
        raise ConfigError(f"path={str(path)!r} is neither a run folder nor a sweep folder with "
                          "completed jobs (subfolders with metrics.json of status completed)")
    return done


def evaluate(cfg: DictConfig) -> list[Path]:
    """Evaluate ``cfg.path`` (a run, or each completed job of a sweep); print one line per run."""
    seeds = [int(s) for s in cfg.seeds]
    check(len(seeds) >= 1 and all(s >= 0 for s in seeds) and len(set(seeds)) == len(seeds),
          "seeds", list(cfg.seeds), "distinct ints >= 0, at least one")
    check(cfg.n is None or 10 <= cfg.n <= 100_000, "n", cfg.n, "null or an int in [10, 100000]")
    check(cfg.name is None or (str(cfg.name) and "/" not in str(cfg.name)
                               and not str(cfg.name).startswith(".")),
          "name", cfg.name, "a file name without '/' (RUN/eval/NAME.json)")
    path = Path(str(cfg.path))
    if not path.is_dir():
        raise ConfigError(f"path={str(path)!r}: no such folder (a run folder or a sweep folder)")
    written = []
    for run in _jobs(path):
        out, result = evaluate_run(run, seeds, cfg.n, str(cfg.weights), str(cfg.device), cfg.name)
        primary = result["primary"]
        sampler = primary.split("/")[0]
        print(f"{run.path}: {primary} {result['mean'][primary]:.3f} ± {result['std'][primary]:.3f}, "
              f"precision {result['mean'][sampler + '/precision']:.3f} ± "
              f"{result['std'][sampler + '/precision']:.3f} over {len(seeds)} seeds -> {out}")
        written.append(out)
    return written


main = hydra_app("evaluate", evaluate)


def cli(argv: list[str] | None = None) -> None:
    run_app(main, "evaluate", argv, positional="path", lists=("seeds",))


if __name__ == "__main__":
    cli()
