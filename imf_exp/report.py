"""Sweep folder -> table and figures, no account needed.

    python -m imf_exp.report outputs/multiruns/2026-11-29/12-00-00-000000 [metric=nfe1/w2_ratio]
                             [columns=nfe1/w2_ratio,ode100/w2_ratio,...]

Collects every job of a Hydra multirun (each subfolder with ``.hydra/overrides.yaml``): its
overrides and ``metrics.json``. Writes into ``<sweep>/report/``:

* ``jobs.csv``: one row per job (status, overrides, final metrics);
* ``table.md`` and ``table.csv``: mean and std over seeds of each metric, one row per setting
  of the swept keys (seed excluded), with how many jobs completed. The columns are the chosen
  metric's sampler's W2 ratio, precision, recall, MMD, W2 (and class accuracy, FD when present),
  or the metrics listed in ``columns=``. When jobs differ in their primary sampler (e.g. iMF's
  ``nfe1`` beside flow matching's ``ode1``), each row shows its own primary sampler's metrics;
* ``metric.png``: the chosen metric per setting with error bars (std over seeds);
* ``samples.png``: one panel of one-step samples per setting (first completed seed).

Jobs that are missing, still running, failed or interrupted are listed, never dropped.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from imf_exp.errors import ConfigError

SEED_KEYS = ("seed",)
SUMMARY_METRICS = ("w2_ratio", "precision", "recall", "mmd", "w2", "accuracy", "fd")
OWN = "primary"  # pseudo-sampler: each job's own primary sampler


def _status(job: Path) -> tuple[str, dict]:
    path = job / "metrics.json"
    if not path.exists():
        return ("running" if (job / "checkpoint.pt").exists() or (job / "train.log").exists()
                else "missing"), {}
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return "unreadable", {"error": f"metrics.json: {err}"}
    return metrics.get("status", "unknown"), metrics


def collect(sweep: Path) -> list[dict[str, Any]]:
    """One record per job folder: number, overrides as a dict, status, final metrics."""
    if not sweep.is_dir():
        raise ConfigError(f"sweep folder {str(sweep)!r} does not exist")
    jobs = []
    def job_order(path: Path) -> list:  # 0, 1, 2, ..., 10 (the sweep's own order), not 0, 1, 10
        return [(0, int(p), "") if p.isdigit() else (1, 0, p)
                for p in path.relative_to(sweep).parts]

    for ov in sorted(sweep.glob("**/.hydra/overrides.yaml"), key=job_order):
        job = ov.parent.parent
        if "report" in job.relative_to(sweep).parts:
            continue
        overrides = {}
        for item in yaml.safe_load(ov.read_text()) or []:
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
        status, metrics = _status(job)
        final = dict(metrics.get("final") or {})
        own = (metrics.get("primary") or "").split("/")[0]
        if own:
            final[f"{OWN}/sampler"] = own
            final.update({f"{OWN}/{k.split('/', 1)[1]}": v for k, v in list(final.items())
                          if k.startswith(own + "/")})
        jobs.append({"job": str(job.relative_to(sweep)), "overrides": overrides, "status": status,
                     "final": final, "error": metrics.get("error", ""),
                     "primary": metrics.get("primary")})
    if not jobs:
        raise ConfigError(f"{sweep} holds no job folders (subfolders with .hydra/overrides.yaml); "
                          "pass the folder of a multirun (outputs/multiruns/DATE/TIME)")
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
            row[f"{name} std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        row["_members"] = members
        rows.append(row)
    return rows


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def write_report(sweep: Path, metric: str | None = None, columns: list[str] | None = None) -> Path:
    jobs = collect(sweep)
    out = sweep / "report"
    out.mkdir(exist_ok=True)
    keys = swept_keys(jobs)
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
            w.writerow([r.get(c, "") for c in cols])
    lines = [f"# Sweep report: {sweep}", "",
             f"{len(jobs)} jobs; swept: {', '.join(keys) or '(nothing)'}; mean ± std over seeds.", "",
             "| " + " | ".join([*group_keys, "completed", *text_cols, *shown]) + " |",
             "|" + "---|" * (len(group_keys) + 1 + len(text_cols) + len(shown))]
    for r in rows:
        cells = [str(r[k]) for k in group_keys] + [r["completed"]] + [r.get(c, "–") for c in text_cols]
        for m in shown:
            cells.append(f"{_fmt(r[m + ' mean'])} ± {_fmt(r[m + ' std'])}" if m + " mean" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    problems = [j for j in jobs if j["status"] != "completed"]
    if problems:
        lines += ["", "## Jobs not completed", ""]
        lines += [f"- `{j['job']}` ({j['status']}): "
                  f"{' '.join(f'{k}={v}' for k, v in j['overrides'].items())}"
                  f"{' - ' + j['error'] if j['error'] else ''}" for j in problems]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    _figures(sweep, out, rows, group_keys, primary)
    return out


def _label(row: dict, keys: list[str]) -> str:
    return "\n".join(f"{k}={row[k]}" for k in keys) or "all"


def _figures(sweep: Path, out: Path, rows: list[dict], keys: list[str], primary: str) -> None:
    from imf_exp.plots import _image_tile, image_side, plt

    with_metric = [r for r in rows if f"{primary} mean" in r]
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(rows) + 1), 3.8))
    if with_metric:
        x = np.arange(len(with_metric))
        ax.errorbar(x, [r[f"{primary} mean"] for r in with_metric],
                    yerr=[r[f"{primary} std"] for r in with_metric], fmt="o", capsize=4)
        ax.set_xticks(x, [_label(r, keys) for r in with_metric], fontsize=7)
    ax.set_ylabel(primary)
    ax.grid(alpha=0.3)
    ax.set_title(f"{primary}: mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=110)
    plt.close(fig)

    sampler = primary.split("/")[0]
    panels = []
    for r in rows:
        done = [m for m in r["_members"] if m["status"] == "completed"]
        own = (done[0]["final"].get(f"{OWN}/sampler", sampler) if sampler == OWN else sampler) if done else sampler
        path = sweep / done[0]["job"] / "samples" / f"{own}.npz" if done else None
        pts = None
        if path and path.exists():
            with np.load(path) as z:  # images are shown in native pixel values
                pts = z["native" if image_side(z["standardized"].shape[1]) else "standardized"]
        panels.append((r, pts))
    n = len(panels)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, (r, pts) in zip(axes.flat, panels):
        if pts is None:
            ax.text(0.5, 0.5, "no completed job", ha="center", va="center", transform=ax.transAxes)
        elif image_side(pts.shape[1]):  # images: a mosaic of the first 25
            side = image_side(pts.shape[1])
            ax.imshow(_image_tile(pts[:25], (side, side), 5), cmap="gray_r")
        else:
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5, lw=0)
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_aspect("equal")
        ax.set_title(_label(r, keys), fontsize=7)
    what = "each row's primary sampler" if sampler == OWN else sampler
    fig.suptitle(f"{what}: samples of the first completed seed", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m imf_exp.report SWEEP_DIR [metric=nfe1/w2_ratio] "
              "[columns=NAME,NAME,...]", file=sys.stderr)
        return 2
    metric = columns = None
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if key not in ("metric", "columns") or not sep:
            print(f"Error: unknown argument {item!r}: expected metric=NAME or columns=NAME,NAME",
                  file=sys.stderr)
            return 2
        if key == "metric":
            metric = value
        else:
            columns = [c for c in value.split(",") if c]
    try:
        out = write_report(Path(argv[0]), metric, columns)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    print((out / "table.md").read_text())
    print(f"wrote {out}/table.md, table.csv, jobs.csv, metric.png, samples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
