"""What a job knows of its scheduler: which signals stop it (read from submitit), and the
driver's console without repeated accounting warnings. (Against a real cluster: test_slurm.py.)"""

import logging
import signal
import subprocess
import sys

from tests.conftest import ROOT


def _in_a_submitit_job(code: str, **env: str) -> str:
    """Run ``code`` in a fresh process whose environment says it is a submitit job."""
    import os

    full = {**os.environ, "PYTHONPATH": str(ROOT), "SUBMITIT_EXECUTOR": "slurm", **env}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def test_stop_signals_include_the_one_submitit_is_configured_to_use():
    from imf_exp.scheduler import stop_signals, submitit_signal

    assert submitit_signal() is None  # not a submitit job
    assert set(stop_signals()) == {signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}
    code = "from imf_exp.scheduler import stop_signals, submitit_signal as s; print(s().name, [x.name for x in stop_signals()])"
    assert _in_a_submitit_job(code) == "SIGUSR2 ['SIGTERM', 'SIGUSR1', 'SIGUSR2']"
    out = _in_a_submitit_job(code, SUBMITIT_PREEMPT_SIGNAL="PWR")
    assert out == "SIGPWR ['SIGTERM', 'SIGUSR1', 'SIGUSR2', 'SIGPWR']"


def test_a_job_outside_slurm_is_not_being_requeued(monkeypatch):
    from imf_exp.scheduler import being_requeued

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert being_requeued() is False


def test_the_driver_shows_one_sacct_warning_and_says_the_rest_are_left_out(caplog):
    from imf_exp.scheduler import QuietSacct

    logger = logging.getLogger("submitit.test_quiet")
    quiet = QuietSacct()
    logger.addFilter(quiet)
    with caplog.at_level(logging.WARNING, logger="submitit.test_quiet"):
        for i in range(6):
            logger.warning("Call #%d - Bypassing sacct error boom, status may be inaccurate.", i)
        logger.warning("a real problem")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and "Call #0" in messages[0]
    assert "further such warnings are left out" in messages[1] and messages[2] == "a real problem"


def test_the_trainer_stops_on_sigusr2_with_a_checkpoint(tmp_path):
    """SIGUSR2 (submitit's default warning before a time limit) is a stop signal like SIGTERM:
    the run writes a checkpoint at the step it is at and says so."""
    import json
    import os
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "imf_exp.train", "trainer.steps=100000",
                             "trainer.batch_size=64", "model.width=16", "model.depth=1",
                             "trainer.compile=off",
                             "trainer.checkpoint_every=0", "trainer.eval_every=0", "eval.n=20",
                             "eval.floor_repeats=1", f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    log = run_dir / "train.log"
    while not (log.exists() and "compiled loss" in log.read_text()):  # fit starts next
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGUSR2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and "SIGUSR2" in metrics["error"]
    assert (run_dir / "checkpoint.pt").exists()
