"""Sweep folder -> table and figures, no account needed (a Hydra app, ``conf/report.yaml``).

    python -m imf_exp.report outputs/multiruns/2026-11-29/12-00-00-000000 [metric=nfe1/w2_ratio]
                             [columns=nfe1/w2_ratio,ode100/w2_ratio,...]

Collects every job of a Hydra multirun (each subfolder with ``.hydra/overrides.yaml``): its
overrides and ``metrics.json``. Writes into ``<sweep>/report/``:

* ``jobs.csv``: one row per job (status, overrides, final metrics);
* ``table.md`` and ``table.csv``: mean and std over seeds of each metric, one row per setting
  of the swept keys (seed excluded), with how many jobs completed (a setting with one completed
  job shows its value alone, and an empty std in the CSV). The columns are the chosen
  metric's sampler's W2 ratio, precision, recall, MMD, W2 (and class accuracy, FD when present),
  or the metrics listed in ``columns=``. When jobs differ in their primary sampler (e.g. iMF's
  ``nfe1`` beside flow matching's ``ode1``), each row shows its own primary sampler's metrics;
* ``metric.png``: the chosen metric per setting with error bars (std over seeds);
* ``samples.png``: one panel of one-step samples per setting (first completed seed).

With ``eval=NAME`` every completed job's metrics are the means of its ``eval/NAME.json``
(``python -m imf_exp.evaluate SWEEP name=NAME``: several evaluation seeds per job) instead of
its final metrics; a job without the file is listed as not evaluated.

Jobs that are missing, still running, failed or interrupted are listed, never dropped.
"""

from __future__ import annotations

import csv
import difflib
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig

from imf_exp.cli import hydra_app
from imf_exp.cli import run as run_app
from imf_exp.config import register_configs
from imf_exp.errors import ConfigError
from imf_exp.run_dir import CHECKPOINT, RunDir, check_writable

SEED_KEYS = ("seed",)
SUMMARY_METRICS = ("w2_ratio", "precision", "recall", "mmd", "w2", "accuracy", "fd")
OWN = "primary"  # pseudo-sampler: each job's own primary sampler


register_configs()


def _status(job: Path) -> tuple[str, dict]:
    run = RunDir(job)
    if not (job / "metrics.json").exists():
        return ("running" if (job / CHECKPOINT).exists() or (job / "train.log").exists()
                else "missing"), {}
    metrics = run.read_metrics()
    if metrics is None:
        return "unreadable", {"error": "metrics.json is not a JSON object"}
    return str(metrics.get("status", "unknown")), metrics


def _overrides(path: Path) -> tuple[dict[str, str], str | None]:
    """A job's ``overrides.yaml`` as ``{key: value}``; with the problem when it is unreadable."""
    try:
        items = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return {}, f"overrides.yaml is unreadable ({type(err).__name__})"
    if not isinstance(items, list):
        return {}, "overrides.yaml is not a list of overrides"
    overrides = {}
    for item in items:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    return overrides, None


def collect(sweep: Path, eval_name: str | None = None) -> list[dict[str, Any]]:
    """One record per job folder: number, overrides as a dict, status, final metrics (with
    ``eval_name``: the means of the job's ``eval/NAME.json`` instead, from ``imf_exp.evaluate``)."""
    if not sweep.is_dir():
        raise ConfigError(f"sweep folder {str(sweep)!r} does not exist")
    if (sweep / ".hydra" / "overrides.yaml").is_file() and not (sweep / "multirun.yaml").is_file():
        raise ConfigError(f"{sweep} is the folder of a single run, not of a sweep: the report "
                          "reads a sweep folder (outputs/multiruns/DATE/TIME)")
    jobs = []
    def job_order(path: Path) -> list:  # 0, 1, 2, ..., 10 (the sweep's own order), not 0, 1, 10
        return [(0, int(p), "") if p.isdigit() else (1, 0, p)
                for p in path.relative_to(sweep).parts]

    for ov in sorted(sweep.glob("**/.hydra/overrides.yaml"), key=job_order):
        job = ov.parent.parent
        if "report" in job.relative_to(sweep).parts or ".hydra" in job.relative_to(sweep).parts:
            continue
        overrides, problem = _overrides(ov)
        status, metrics = _status(job)
        if eval_name and status == "completed":
            result = RunDir(job).read_eval(eval_name)
            if result is None or not isinstance(result.get("mean"), dict):
                status, metrics = "not evaluated", {
                    "error": f"eval/{eval_name}.json is missing or unreadable "
                             f"(python -m imf_exp.evaluate {sweep} name={eval_name})"}
            else:
                metrics = {"final": result["mean"], "primary": result.get("primary")}
        if problem:
            status, metrics = "unreadable", {"error": problem}
        final = metrics.get("final") if isinstance(metrics.get("final"), dict) else {}
        final = {str(k): float(v) for k, v in final.items()  # numbers only: a table of numbers
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        primary = metrics.get("primary") if isinstance(metrics.get("primary"), str) else None
        if status == "completed" and not final:
            status, metrics = "unreadable", {"error": "metrics.json holds no final metrics"}
        own = (primary or "").split("/")[0] if "/" in (primary or "") else ""
        if own:
            final[f"{OWN}/sampler"] = own
            final.update({f"{OWN}/{k.split('/', 1)[1]}": v for k, v in list(final.items())
                          if k.startswith(own + "/")})
        jobs.append({"job": str(job.relative_to(sweep)), "overrides": overrides, "status": status,
                     "final": final, "error": str(metrics.get("error", "")), "primary": primary})
    if not jobs:
        raise ConfigError(f"{sweep} holds no job folders (subfolders with .hydra/overrides.yaml); "
                          "pass the folder of a multirun (outputs/multiruns/DATE/TIME)")
    if eval_name and not any(j["status"] == "completed" for j in jobs):
        raise ConfigError(f"eval={eval_name!r}: no job of {sweep} has eval/{eval_name}.json; write "
                          f"them with python -m imf_exp.evaluate {sweep} name={eval_name}")
    return jobs


def swept_keys(jobs: list[dict]) -> list[str]:
    keys = sorted({k for j in jobs for k in j["overrides"]})
    return [k for k in keys if len({j["overrides"].get(k) for j in jobs}) > 1 or len(jobs) == 1]


def aggregate(jobs: list[dict], group_keys: list[str]) -> list[dict[str, Any]]:
    """Mean and std over seeds of every final metric, per setting of ``group_keys``."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for j in jobs:
        groups[tuple(j["overrides"].get(k, "") for k in group_keys)].append(j)
    rows = []
    for setting, members in groups.items():
        done = [m for m in members if m["status"] == "completed"]
        row: dict[str, Any] = dict(zip(group_keys, setting))
        row["completed"] = f"{len(done)}/{len(members)}"
        names = sorted({k for m in done for k in m["final"]})
        for name in names:
            if name == f"{OWN}/sampler":
                row[name] = ",".join(sorted({m["final"][name] for m in done if name in m["final"]}))
                continue
            vals = np.array([m["final"][name] for m in done if name in m["final"]], dtype=float)
            row[f"{name} mean"] = float(np.mean(vals))
            row[f"{name} std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        row["_members"] = members
        rows.append(row)
    return rows


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def _cell(row: dict, metric: str) -> str:
    """``mean ± std``, or the value alone when one job completed (no std to show)."""
    if f"{metric} mean" not in row:
        return "–"
    std = row[f"{metric} std"]
    return _fmt(row[f"{metric} mean"]) + ("" if std is None else f" ± {_fmt(std)}")


def _check_names(jobs: list[dict], metric: str | None, columns: list[str] | None) -> None:
    """``metric`` and ``columns`` name metrics some job has (its own primary's as ``primary/``)."""
    names = sorted({k for j in jobs for k in j["final"]})
    if not names:
        return  # no completed job yet: nothing to check against
    for key, value in [("metric", metric)] + [("columns", c) for c in columns or []]:
        if value is not None and value not in names:
            close = difflib.get_close_matches(value, names, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(f"{key}={value!r}: no job has this metric; {hint}({len(names)} "
                              f"metrics, e.g. {', '.join(names[:6])})")


def write_report(sweep: Path, metric: str | None = None, columns: list[str] | None = None,
                 grid: list[str] | None = None, eval_name: str | None = None) -> Path:
    jobs = collect(sweep, eval_name)
    _check_names(jobs, metric, columns)
    keys = swept_keys(jobs)
    if grid is not None and (len(grid) != 2 or not set(grid) <= set(keys) - set(SEED_KEYS)):
        raise ConfigError(f"grid={','.join(grid)!r} is not allowed: two swept keys ROW,COLUMN; "
                          f"swept: {', '.join(k for k in keys if k not in SEED_KEYS) or '(nothing)'}")
    out = sweep / "report"
    check_writable(out, "sweep")
    try:
        out.mkdir(exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot write the report into {out}: {err.strerror or err}") from None
    group_keys = [k for k in keys if k not in SEED_KEYS]
    primary = metric or next((j["primary"] for j in jobs if j.get("primary")), "nfe1/w2_ratio")

    final_names = sorted({k for j in jobs for k in j["final"] if not k.startswith(OWN + "/")})
    with open(out / "jobs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "status", *keys, *final_names, "error"])
        for j in jobs:
            w.writerow([j["job"], j["status"], *(j["overrides"].get(k, "") for k in keys),
                        *(j["final"].get(n, "") for n in final_names), j["error"]])

    rows = aggregate(jobs, group_keys)
    mixed = metric is None and len({j["primary"] for j in jobs if j.get("primary")}) > 1
    prefix = (OWN + "/") if mixed else (primary.split("/")[0] + "/" if "/" in primary else "")
    if mixed:
        primary = f"{OWN}/{primary.split('/', 1)[-1]}"
    if columns:
        shown = list(columns)
    else:
        shown = [f"{prefix}{m}" for m in SUMMARY_METRICS if any(f"{prefix}{m} mean" in r for r in rows)]
        shown += [m for m in ("w2_floor",) if any(f"{m} mean" in r for r in rows)]
    text_cols = [f"{OWN}/sampler"] if mixed and not columns else []
    cols = [*group_keys, "completed", *text_cols, *[f"{m} {s}" for m in shown for s in ("mean", "std")]]
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c, "") for c in cols])
    lines = [f"# Sweep report: {sweep}", "",
             f"{len(jobs)} jobs; swept: {', '.join(keys) or '(nothing)'}; mean ± std over seeds "
             "(a value alone: one completed job).", "",
             "| " + " | ".join([*group_keys, "completed", *text_cols, *shown]) + " |",
             "|" + "---|" * (len(group_keys) + 1 + len(text_cols) + len(shown))]
    for r in rows:
        cells = [str(r[k]) for k in group_keys] + [r["completed"]] + [r.get(c, "–") for c in text_cols]
        cells += [_cell(r, m) for m in shown]
        lines.append("| " + " | ".join(cells) + " |")
    problems = [j for j in jobs if j["status"] != "completed"]
    if problems:
        lines += ["", "## Jobs not completed", ""]
        lines += [f"- `{j['job']}` ({j['status']}): "
                  f"{' '.join(f'{k}={v}' for k, v in j['overrides'].items())}"
                  f"{' - ' + j['error'] if j['error'] else ''}" for j in problems]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    _figures(sweep, out, rows, group_keys, primary)
    if grid:
        _grid_figure(sweep, out / "grid.png", rows, grid, prefix)
    return out


def _label(row: dict, keys: list[str]) -> str:
    return "\n".join(f"{k}={row[k]}" for k in keys) or "all"


def _figures(sweep: Path, out: Path, rows: list[dict], keys: list[str], primary: str) -> None:
    from imf_exp import plots

    with_metric = [r for r in rows if f"{primary} mean" in r]
    plots.plot_errorbars([_label(r, keys) for r in with_metric],
                         [r[f"{primary} mean"] for r in with_metric],
                         [r[f"{primary} std"] or 0.0 for r in with_metric], out / "metric.png",
                         ylabel=primary, title=f"{primary}: mean ± std over seeds")
    sampler = primary.split("/")[0]
    cells, side = [], None
    for r in rows:
        done = [m for m in r["_members"] if m["status"] == "completed"]
        own = (done[0]["final"].get(f"{OWN}/sampler", sampler) if sampler == OWN else sampler) if done else sampler
        loaded = RunDir(sweep / done[0]["job"]).load_samples(own) if done else None
        if loaded is None:
            cells.append((_label(r, keys) + "\n(no completed job)", None))
            continue
        side = side or plots.image_side(loaded["standardized"].shape[1])
        cells.append((_label(r, keys), loaded["native" if side else "standardized"]))
    what = "each row's primary sampler" if sampler == OWN else sampler
    plots.plot_grid([cells], out / "samples.png", f"{what}: samples of the first completed seed",
                    side=side, cols=min(len(cells), 4))


def _reference(sweep: Path, job: dict) -> np.ndarray | None:
    """The evaluation reference of a job (its dataset and eval settings, from metrics.json)."""
    import torch
    from omegaconf import OmegaConf

    from imf_exp.build import instantiate_node
    from imf_exp.data.base import as_dataset

    config = (RunDir(sweep / job["job"]).read_metrics() or {}).get("config")
    if not isinstance(config, dict) or "dataset" not in config:
        return None
    dataset = as_dataset(instantiate_node(OmegaConf.create(config), "dataset"))
    ev = config.get("eval", {})
    real, _ = dataset.eval_reference(int(ev.get("n", 2000)), torch.Generator().manual_seed(int(ev.get("seed", 1234))))
    return real.float().numpy()


def _grid_figure(sweep: Path, path: Path, rows: list[dict], grid: list[str], prefix: str) -> None:
    """One row per value of ``grid[0]``: the reference, then the first completed seed's samples
    of each value of ``grid[1]``, titled with mean metrics over seeds (2-D data)."""
    from imf_exp import plots

    row_key, col_key = grid
    row_values = list(dict.fromkeys(r[row_key] for r in rows))
    col_values = list(dict.fromkeys(r[col_key] for r in rows))
    cells = []
    for rv in row_values:
        line, ref = [], None
        for cv in col_values:
            r = next((x for x in rows if x[row_key] == rv and x[col_key] == cv), None)
            done = [m for m in (r or {}).get("_members", []) if m["status"] == "completed"]
            if not done:
                line.append((f"{cv}\n(no completed job)", None))
                continue
            ref = ref if ref is not None else _reference(sweep, done[0])
            own = done[0]["final"].get(f"{OWN}/sampler") if prefix == OWN + "/" else prefix.rstrip("/")
            samples = RunDir(sweep / done[0]["job"]).load_samples(own or "nfe1")
            title = (f"{cv} ({own}, {r['completed']} seeds)\nW2 ratio {_cell(r, prefix + 'w2_ratio')}\n"
                     f"precision {_cell(r, prefix + 'precision')}")
            line.append((title, None if samples is None else samples["standardized"]))
        cells.append([(f"{row_key}={rv}\nreference", ref)] + line)
    plots.plot_grid(cells, path, f"{row_key} x {col_key}: samples of the first seed, metrics over seeds",
                    font=7)


def report(cfg: DictConfig) -> Path:
    """Write the report of the sweep folder ``cfg.sweep``; print its table."""
    out = write_report(Path(cfg.sweep), cfg.metric, list(cfg.columns) if cfg.columns else None,
                       list(cfg.grid) if cfg.grid else None, cfg.eval)
    print((out / "table.md").read_text())
    print(f"wrote {out}/table.md, table.csv, jobs.csv, metric.png, samples.png")
    return out


main = hydra_app("report", report)


def cli(argv: list[str] | None = None) -> None:
    run_app(main, "report", argv, positional="sweep", lists=("columns", "grid"))


if __name__ == "__main__":
    cli()
