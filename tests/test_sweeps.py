"""Real multiruns through the CLI (basic, joblib, submitit_local), the report, W&B offline, Optuna."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

TINY = ["trainer.steps=60", "trainer.batch_size=64", "model.width=16", "model.depth=1",
        "eval.n=100", "eval.floor_repeats=1", "eval.nfe=[1]", "trainer.log_every=20",
        "trainer.eval_every=0", "trainer.checkpoint_every=0"]


def multirun(sweep_dir, *args, env=None, timeout=600):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "imf_exp.train", "-m", *args, *TINY,
                           f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def report(sweep_dir):
    proc = subprocess.run([sys.executable, "-m", "imf_exp.report", str(sweep_dir)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def job_metrics(sweep_dir):
    out = {}
    for job in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        out[int(job.name)] = json.loads((job / "metrics.json").read_text())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_multirun_and_report(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, f"launcher={launcher}", "boundary_mode=shared,aux_head", "seed=0,1")
    metrics = job_metrics(sweep)
    assert sorted(metrics) == [0, 1, 2, 3] and all(m["status"] == "completed" for m in metrics.values())
    report(sweep)
    rows = list(csv.DictReader(open(sweep / "report" / "table.csv")))
    assert [r["boundary_mode"] for r in rows] == ["shared", "aux_head"]
    # Hydra numbers jobs in override order: boundary_mode outer, seed inner
    for row, jobs in zip(rows, ([0, 1], [2, 3])):
        vals = [metrics[j]["final"]["nfe1/w2_ratio"] for j in jobs]
        assert row["completed"] == "2/2"
        assert float(row["nfe1/w2_ratio mean"]) == pytest.approx(np.mean(vals))
        assert float(row["nfe1/w2_ratio std"]) == pytest.approx(np.std(vals, ddof=1))
    per_job = list(csv.DictReader(open(sweep / "report" / "jobs.csv")))
    assert len(per_job) == 4 and {r["status"] for r in per_job} == {"completed"}
    for name in ("table.md", "metric.png", "samples.png"):
        assert (sweep / "report" / name).stat().st_size > 0
    assert "| shared | 2/2 |" in (sweep / "report" / "table.md").read_text()
    for m in metrics.values():  # every job wrote into its own folder
        assert m["config"]["seed"] in (0, 1)
    if launcher == "submitit_local":
        assert (sweep / ".submitit").is_dir()


@pytest.mark.slow
def test_failed_job_is_recorded_and_sweep_goes_on(tmp_path):
    """Bad values are refused before the sweep starts (tests/test_bad_input.py); a job that
    fails while it runs (here: its data turn NaN at step 5) is recorded, and the others go on."""
    sweep = tmp_path / "sweep"
    multirun(sweep, "dataset=custom", "dataset._target_=tests.helpers.NaNCircles", "+dataset.batch=64",
             "+dataset.first=100000,5")
    metrics = job_metrics(sweep)
    assert metrics[0]["status"] == "completed"
    assert metrics[1]["status"] == "failed" and "non-finite loss" in metrics[1]["error"]
    # a job that never wrote anything (killed before its first file) and a partial sweep
    (sweep / "2" / ".hydra").mkdir(parents=True)
    (sweep / "2" / ".hydra" / "overrides.yaml").write_text("- +dataset.first=7\n")
    out = report(sweep).stdout
    assert "Jobs not completed" in out and "(failed)" in out and "(missing)" in out
    rows = {r["dataset.first"]: r for r in csv.DictReader(open(sweep / "report" / "table.csv"))}
    assert rows["100000"]["completed"] == "1/1" and rows["5"]["completed"] == "0/1"
    assert rows["7"]["completed"] == "0/1"


@pytest.mark.slow
def test_wandb_offline_runs_read_back(tmp_path):
    sweep = tmp_path / "sweep"
    home_cache = tmp_path / "home_cache"  # the user's cache folder: W&B must write nothing there
    multirun(sweep, "logger=wandb", "seed=0,1",
             env={"WANDB_MODE": "", "WANDB_API_KEY": "", "XDG_CACHE_HOME": str(home_cache)})
    assert not (home_cache / "wandb").exists()
    group = f"{sweep.parent.name}_{sweep.name}"
    for job, m in job_metrics(sweep).items():
        run_dirs = list((sweep / str(job) / "wandb").glob("offline-run-*"))
        assert len(run_dirs) == 1  # one run per job, each finished, inside the job folder
        records = subprocess.run(["wandb", "leet", "inspect", "--json", str(run_dirs[0])],
                                 capture_output=True, text=True, timeout=120).stdout.splitlines()
        run = next(json.loads(r)["run"] for r in records if '"type":"run"' in r)
        assert run["run_group"] == group and run["job_type"] == "train"
        assert "boundary_mode:shared" in run["tags"] and "dataset:circles" in run["tags"]
        summary = json.loads(subprocess.run(["wandb", "leet", "inspect", "--summary", "--json",
                                             str(run_dirs[0])], capture_output=True, text=True,
                                            timeout=120).stdout)
        assert summary["state"] == "finished"
        assert summary["summary"]["final/nfe1/w2_ratio"] == pytest.approx(m["final"]["nfe1/w2_ratio"])
        assert "train/loss" in summary["summary"] and "eval/nfe1/precision" in summary["summary"]
        # every figure of the run folder is logged as a W&B image too
        logged = {k.split("/", 1)[1] for k in summary["summary"] if k.startswith("figures/")}
        assert logged == {"samples", "loss", "fields", "transport", "training", "samplers"}
        media = {p.name.split("_")[0] for p in run_dirs[0].glob("files/media/images/figures/*.png")}
        assert media == logged
    # the figures command logs an eval run into the same group
    proc = subprocess.run([sys.executable, "-m", "imf_exp.figures", str(sweep / "0"), "wandb=offline",
                           f"out={tmp_path / 'figs'}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted((sweep / "0" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    records = subprocess.run(["wandb", "leet", "inspect", "--json", str(runs[-1])],
                             capture_output=True, text=True, timeout=120).stdout.splitlines()
    run = next(json.loads(r)["run"] for r in records if '"type":"run"' in r)
    assert run["job_type"] == "eval" and run["run_group"] == group


@pytest.mark.slow
def test_wandb_failure_does_not_stop_training(tmp_path, cli):
    run_dir = tmp_path / "run"
    env = {"WANDB_MODE": "", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9",
           "WANDB_INIT_TIMEOUT": "20"}
    proc = cli(["-m", "imf_exp.train", "logger=wandb", "logger.mode=online", *TINY,
                f"hydra.run.dir={run_dir}"], cwd=ROOT, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B start failed" in proc.stdout and "logger.mode=offline" in proc.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "figures" / "samples.png").exists()


@pytest.mark.slow
def test_optuna_search_minimizes_the_returned_metric(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    multirun(sweep, "hparams_search=optuna", "hydra.sweeper.n_trials=3")
    import yaml

    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [m["primary_value"] for m in job_metrics(sweep).values()]
    assert len(values) == 3 and best["best_value"] == pytest.approx(min(values))
    assert set(best["best_params"]) == {"optimizer.lr", "time_sampler.p_equal", "objective.norm_p",
                                        "trainer.ema_decay"}


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "imf_exp.train", *TINY, "trainer.steps=5",
                               f"hydra.run.dir={tmp_path}/runs/${{now:%H-%M-%S-%f}}"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 3 and all((f / "metrics.json").exists() for f in folders)
