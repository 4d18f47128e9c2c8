"""Sweeps on a real SLURM cluster (the one-node cluster of scripts/slurm/up.sh): a sweep, a job
pre-empted with ``scontrol requeue``, a job hitting its time limit, an Optuna study pre-empted.
Each ends with the driver's exit code 0, every job completed, and the interrupted jobs' weights
bitwise equal to uninterrupted runs of the same config."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LAUNCH = ["launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "threads=1",
          "hydra.launcher.timeout_min=10", "trainer.progress=false"]
# about 200 steps per second on one core of the 2-core development machine
JOB = ["trainer.batch_size=256", "model.width=64", "model.depth=2", "trainer.eval_every=0",
       "trainer.checkpoint_every=500", "trainer.log_every=100", "eval.n=200", "eval.floor_repeats=1",
       "eval.nfe=[1]", "trainer.compile=off"]


def _cluster_up() -> str | None:
    """Why the SLURM tests cannot run here (None: they can)."""
    if not shutil.which("sinfo") or not shutil.which("scontrol"):
        return "no SLURM client here; run `bash scripts/slurm/up.sh` as root to start a one-node cluster"
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in state):
        return f"the SLURM cluster is not up ({state}); run `bash scripts/slurm/up.sh` as root"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    why = _cluster_up()
    if why:
        pytest.skip(why)


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}


def start_sweep(sweep: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "imf_exp.train", "-m", *LAUNCH, *JOB, *args,
                             f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reference_run(folder: Path, *args: str) -> subprocess.Popen:
    """The same job, uninterrupted, on this machine (one thread, as the SLURM job)."""
    return subprocess.Popen([sys.executable, "-m", "imf_exp.train", *JOB, "threads=1",
                             "trainer.progress=false", *args, f"hydra.run.dir={folder}"], cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, what: str, driver: subprocess.Popen, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended (exit {driver.returncode}) before {what}: "
                                 f"{driver.stderr.read()[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(what)


def job_id(sweep: Path, num: int) -> str | None:
    """The SLURM id of the sweep's job ``num`` (``ARRAYID_TASK``, or a plain id for a batch of
    one), as its Hydra config records it."""
    from omegaconf import OmegaConf

    path = sweep / str(num) / ".hydra" / "hydra.yaml"
    try:
        return str(OmegaConf.load(path).hydra.job.id)
    except Exception:  # noqa: BLE001 - not written yet
        return None


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = (torch.load(p / "checkpoint.pt", weights_only=False) for p in (a, b))
    return sa["step"] == sb["step"] and all(
        torch.equal(sa[part][k], sb[part][k]) for part in ("model", "ema") for k in sa[part])


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return out, err


def test_a_preempted_job_resumes_and_the_sweep_completes(tmp_path):
    """``scontrol requeue`` of a running job after its first checkpoint (what SLURM does on a
    pre-emption): the job writes a checkpoint at the step it is at, ends without a result, is
    requeued, resumes in its folder and completes; the driver exits 0; the report lists both
    jobs; the pre-empted job's weights equal an uninterrupted run's."""
    sweep = tmp_path / "sweep"
    driver = start_sweep(sweep, "trainer.steps=6000", "seed=0,1")
    wait_for(lambda: (sweep / "0" / "checkpoint.pt").exists() and job_id(sweep, 0), "job 0's checkpoint",
             driver)
    requeue = subprocess.run(["scontrol", "requeue", job_id(sweep, 0)], capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    reference = reference_run(tmp_path / "reference", "trainer.steps=6000", "seed=0")
    out, err = finish(driver)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]
    for num in (0, 1):
        metrics = json.loads((sweep / str(num) / "metrics.json").read_text())
        assert metrics["status"] == "completed", (num, metrics.get("error"))
    log = (sweep / "0" / "train.log").read_text()
    assert "stopped by SIGTERM" in log and "resumed from" in log
    assert list((sweep / "0" / ".hydra").glob("resume-*/config.yaml"))
    assert same_weights(sweep / "0", tmp_path / "reference")
    assert err.count("Bypassing sacct error") <= 1  # the driver's console stays readable
    report = subprocess.run([sys.executable, "-m", "imf_exp.report", str(sweep)], cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    import csv

    jobs = list(csv.DictReader(open(sweep / "report" / "jobs.csv")))
    assert [(j["job"], j["status"]) for j in jobs] == [("0", "completed"), ("1", "completed")]


def test_a_job_at_its_time_limit_checkpoints_requeues_and_resumes(tmp_path):
    """A job longer than its time limit: submitit has SLURM send its signal (SIGUSR2, read from
    submitit) before the limit; the run checkpoints at once, submitit requeues it (a time-out,
    counted against max_num_timeout), it resumes where it stopped and completes: the driver
    exits 0 and the weights equal an uninterrupted run's."""
    sweep = tmp_path / "sweep"
    steps = "trainer.steps=20000"  # about 100 s of training: past the first warning at 30-60 s
    driver = start_sweep(sweep, steps, "seed=3", "hydra.launcher.timeout_min=2",
                         "hydra.launcher.signal_delay_s=60", "hydra.launcher.max_num_timeout=6")
    reference = reference_run(tmp_path / "reference", steps, "seed=3")
    finish(driver, timeout=1200)
    assert reference.wait(timeout=900) == 0, reference.stderr.read()[-2000:]
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    log = (sweep / "0" / "train.log").read_text()
    assert "stopped by SIGUSR2" in log and "resumed from" in log
    assert same_weights(sweep / "0", tmp_path / "reference")


def test_an_optuna_study_survives_a_preemption(tmp_path):
    """An Optuna search on SLURM whose first trial is pre-empted: the study ends with every trial
    told, and its best value is the best of the jobs' returned metrics."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    sweep = tmp_path / "sweep"
    driver = start_sweep(sweep, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.steps=3000")
    wait_for(lambda: (sweep / "0" / "checkpoint.pt").exists() and job_id(sweep, 0), "trial 0's checkpoint",
             driver)
    assert subprocess.run(["scontrol", "requeue", job_id(sweep, 0)], capture_output=True).returncode == 0
    finish(driver)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [json.loads((sweep / str(n) / "metrics.json").read_text())["primary_value"] for n in (0, 1)]
    assert best["best_value"] == pytest.approx(min(values))
    assert "resumed from" in (sweep / "0" / "train.log").read_text()


def test_a_cancelled_job_is_reported_and_the_others_complete(tmp_path):
    """``scancel`` of a running job (stopped for good, not requeued): the run checkpoints and
    records itself as interrupted, the driver does not wait for it forever: the other job
    completes and the driver ends with the cancelled job reported (exit 1)."""
    sweep = tmp_path / "sweep"
    driver = start_sweep(sweep, "trainer.steps=4000", "seed=0,1")
    wait_for(lambda: (sweep / "1" / "checkpoint.pt").exists() and job_id(sweep, 1), "job 1's checkpoint",
             driver)
    assert subprocess.run(["scancel", job_id(sweep, 1)], capture_output=True).returncode == 0
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 1 and "stopped by SIGTERM" in err, err[-3000:]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "completed"
    cancelled = json.loads((sweep / "1" / "metrics.json").read_text())
    assert cancelled["status"] == "interrupted" and (sweep / "1" / "checkpoint.pt").exists()
