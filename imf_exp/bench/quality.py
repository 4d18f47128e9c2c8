"""Time to quality: the default run, trained in a subprocess until ``nfe1/w2_ratio < threshold``.

Two clocks (see :mod:`imf_exp.bench`): ``train_seconds`` from the trainer's own timed history
rows, ``wall_seconds`` between the ``run folder:`` and the ``step N:`` lines of ``train.log``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from imf_exp.bench.variants import ROOT

TTQ_THRESHOLD = 1.3
TTQ_EVAL_EVERY = 200  # a multiple of trainer.log_every, so every eval step closes a history row
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[[^\]]*\]\[INFO\] - "
                      r"(run folder:|step (\d+):)")


def time_to_quality(bench_dir: Path, device: torch.device, threshold: float,
                    extra: list[str], threads: int | None = None) -> dict:
    """Train the default run in a subprocess; the time until ``nfe1/w2_ratio < threshold``."""
    run_dir = bench_dir / "time_to_quality"
    cmd = [sys.executable, "-m", "imf_exp.train", f"hydra.run.dir={run_dir}",
           f"trainer.eval_every={TTQ_EVAL_EVERY}", "trainer.progress=false",
           f"device={device.type}", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                   os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print(f"time to quality: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    process_s = time.perf_counter() - t0
    bench_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / "time_to_quality.log").write_text(proc.stdout + proc.stderr)
    out = {"command": cmd[1:], "threshold": threshold, "process_seconds": process_s,
           "returncode": proc.returncode, "run_dir": str(run_dir)}
    if proc.returncode != 0:
        out["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return out
    return {**out, **quality_times(run_dir, threshold)}


def quality_times(run_dir: Path, threshold: float) -> dict:
    """From a finished run folder: the first eval step with ``nfe1/w2_ratio < threshold`` and
    the two clocks up to it; ``None`` where it never got there."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evals = [(e["step"], e["nfe1/w2_ratio"]) for e in metrics["evals"]]
    hit = next((s for s, w in evals if w < threshold), None)
    out = {"evals": [{"step": s, "nfe1/w2_ratio": w} for s, w in evals], "step": hit,
           "train_seconds": None, "wall_seconds": None}
    if hit is None:
        return out
    out["train_seconds"] = train_seconds(metrics["history"], hit)
    stamps = log_stamps(run_dir / "train.log")
    if "start" in stamps and hit in stamps:
        out["wall_seconds"] = stamps[hit] - stamps["start"]
    return out


def train_seconds(history: list[dict], step: int) -> float:
    """The trainer's timed seconds up to ``step``: each history row holds the steps since the
    previous row and their rate."""
    prev, total = 0, 0.0
    for row in history:
        if row["step"] > step:
            break
        total += (row["step"] - prev) / row["steps_per_s"]
        prev = row["step"]
    return total


def log_stamps(log: Path) -> dict:
    """The time stamp of the ``run folder:`` line (key ``"start"``) and of each eval's first
    ``step N:`` line (key ``N``) in a ``train.log``."""
    stamps = {}
    for line in log.read_text().splitlines():
        mt = LOG_LINE.match(line)
        if mt:
            when = dt.datetime.strptime(mt.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.setdefault("start" if mt.group(3) is None else int(mt.group(3)), when)
    return stamps
