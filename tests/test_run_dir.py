"""The run folder: resume after SIGKILL/SIGTERM, divergence handling, corrupt checkpoints,
clobber protection."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from imf_exp.errors import ConfigError
from imf_exp.run_dir import CHECKPOINT, PREVIOUS, RunDir
from tests.conftest import ROOT

TINY = ["trainer.steps=600", "trainer.batch_size=256", "model.width=32", "model.depth=2",
        "eval.n=200", "eval.floor_repeats=1", "eval.nfe=[1]", "trainer.eval_every=300",
        "trainer.checkpoint_every=50", "trainer.log_every=50"]


def start(args, env=None):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "imf_exp.train", *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(run_dir, min_step, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        try:
            if torch.load(run_dir / CHECKPOINT, weights_only=False)["step"] >= min_step:
                return
        except Exception:  # noqa: BLE001 - not there yet
            pass
        time.sleep(0.1)
    raise TimeoutError


def same_weights(a, b):
    sa, sb = (torch.load(p / CHECKPOINT, weights_only=False) for p in (a, b))
    return sa["step"] == sb["step"] and all(
        torch.equal(sa[part][k], sb[part][k]) for part in ("model", "ema") for k in sa[part])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rel") / "full"
    proc = start([*TINY, f"hydra.run.dir={run_dir}"])
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "sigterm", "sigusr1"])
def test_interrupted_run_resumes_to_identical_weights(how, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    proc = start([*TINY, f"hydra.run.dir={run_dir}"])
    wait_for_checkpoint(run_dir, 150, proc)
    sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigusr1": signal.SIGUSR1}[how]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)
    assert 150 <= state["step"] < 600
    if how != "sigkill":  # a graceful stop checkpoints the step it stopped at and says so
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "interrupted" and metrics["step"] == state["step"]
        assert f"resume={run_dir}" in out + err
    resumed = subprocess.run([sys.executable, "-m", "imf_exp.train", f"resume={run_dir}"], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {run_dir / CHECKPOINT} at step {state['step']}" in resumed.stdout
    assert same_weights(uninterrupted, run_dir)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (uninterrupted, run_dir))
    assert a["final"] == b["final"] and b["status"] == "completed"
    steps_a, steps_b = [h["step"] for h in a["history"]], [h["step"] for h in b["history"]]
    # a graceful stop adds one row for the partial log interval it flushed before saving
    assert set(steps_a) <= set(steps_b) and len(steps_b) - len(steps_a) == (how != "sigkill")
    assert (run_dir / ".hydra" / "config.yaml").read_text() != ""  # the original config is kept


@pytest.mark.slow
def test_requeue_in_the_same_folder_resumes(uninterrupted, tmp_path):
    """The same command in the same folder (a requeued job) continues; it never restarts."""
    run_dir = tmp_path / "run"
    proc = start([*TINY, f"hydra.run.dir={run_dir}"])
    wait_for_checkpoint(run_dir, 100, proc)
    proc.kill()
    proc.communicate()
    again = start([*TINY, f"hydra.run.dir={run_dir}"])
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0 and "resumed from" in out
    assert same_weights(uninterrupted, run_dir)


def test_resume_refuses_overrides_that_change_the_run(uninterrupted, cli):
    proc = cli(["-m", "imf_exp.train", f"resume={uninterrupted}", "model.width=64"], cwd=ROOT)
    assert proc.returncode == 2
    assert "model.width (32 in the run, 64 now)" in proc.stderr and "Traceback" not in proc.stderr


def test_folder_with_another_runs_checkpoint_is_not_clobbered(uninterrupted, cli):
    before = (uninterrupted / CHECKPOINT).read_bytes()
    proc = cli(["-m", "imf_exp.train", *TINY, "model.width=48", f"hydra.run.dir={uninterrupted}"], cwd=ROOT)
    assert proc.returncode == 2 and "already holds a checkpoint of another config" in proc.stderr
    assert "model.width" in proc.stderr
    assert (uninterrupted / CHECKPOINT).read_bytes() == before


def test_resume_of_missing_folder(tmp_path, cli):
    proc = cli(["-m", "imf_exp.train", f"resume={tmp_path}/nope"], cwd=ROOT)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fused_update", [False, True])
def test_divergence_is_caught_with_step_and_term(tmp_path, cli, fused_update):
    """Eager update and fused update (which clips, steps and reports the norm in one call)."""
    run_dir = tmp_path / "nan"
    args = [*TINY, "dataset=custom", "dataset._target_=tests.helpers.NaNCircles", "+dataset.first=130",
            f"trainer.fused_update={str(fused_update).lower()}", f"hydra.run.dir={run_dir}"]
    proc = cli(["-m", "imf_exp.train", *args], cwd=ROOT)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "non-finite loss" in proc.stderr and "at step 130" in proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["failed_step"] == 130 and "loss" in metrics["terms"]
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)
    assert state["step"] == 100  # the last good checkpoint, never one with NaN weights
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    # skipping a bounded number of bad steps instead
    ok = cli(["-m", "imf_exp.train", *args[:-1], "+dataset.last=132", "trainer.max_bad_steps=5",
              f"hydra.run.dir={tmp_path / 'skip'}"], cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "skipping step 130" in ok.stdout and "(3 of at most 5)" in ok.stdout
    assert json.loads((tmp_path / "skip" / "metrics.json").read_text())["status"] == "completed"


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, caplog):
    good = {k: 0 for k in ("model", "ema", "optimizer", "scheduler", "rng", "history", "evals", "config")}
    torch.save({**good, "step": 50}, tmp_path / PREVIOUS)
    torch.save({**good, "step": 100}, tmp_path / CHECKPOINT)
    assert RunDir(tmp_path).load_checkpoint()["step"] == 100
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(data[: len(data) // 2])  # truncated
    state = RunDir(tmp_path).load_checkpoint()
    assert state["step"] == 50 and state["path"].endswith(PREVIOUS)
    assert "corrupt or truncated" in caplog.text
    (tmp_path / PREVIOUS).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="no readable checkpoint"):
        RunDir(tmp_path).load_checkpoint()
    assert RunDir(tmp_path / "empty").load_checkpoint() is None


@pytest.mark.slow
def test_pooled_guided_run_resumes_to_identical_weights(tmp_path):
    """trainer.data_pool (batches left in the pool are checkpointed) with guidance conditions in
    the pool and the fused update (its Adam state in the optimizer's state dict): SIGKILL
    mid-run, resume, same weights as without a kill."""
    args = [*TINY, "trainer.steps=300", "trainer.eval_every=0", "dataset=moons", "guidance=cfg",
            "trainer.data_pool=7", "trainer.fused_update=true"]
    full = tmp_path / "full"
    proc = start([*args, f"hydra.run.dir={full}"])
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    run_dir = tmp_path / "run"
    proc = start([*args, f"hydra.run.dir={run_dir}"])
    wait_for_checkpoint(run_dir, 150, proc)
    proc.kill()
    proc.communicate()
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)
    assert state["step"] < 300 and 0 < len(state["data_pool"]) < 7  # mid-pool: 50 k is not 7 m
    again = start([*args, f"hydra.run.dir={run_dir}"])
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0 and "resumed from" in out, err[-2000:]
    assert same_weights(full, run_dir)


def _tiny_run(folder):
    from tests.conftest import train_in_process

    return train_in_process([*TINY, "trainer.steps=60", "trainer.eval_every=0"], folder)


def test_resume_applies_the_keys_that_may_change(tmp_path):
    """``resume=RUN logger=wandb`` logs the resumed run to W&B (the override is applied, not
    dropped); keys that would change the trajectory are refused; a run folder whose
    .hydra/config.yaml was deleted still resumes from the config inside its checkpoint."""
    from imf_exp.config import to_dict
    from tests.conftest import compose_cfg

    run = RunDir(_tiny_run(tmp_path / "run"))
    cfg = compose_cfg([f"resume={run.path}", "logger=wandb", "logger.mode=disabled"])
    run_cfg, state = run.prepare(cfg, explicit=True, override_keys=["resume", "logger", "logger.mode"])
    assert run_cfg.logger._target_ == "imf_exp.loggers.WandbLogger" and run_cfg.logger.mode == "disabled"
    assert run_cfg.trainer.steps == 60 and state["step"] == 60
    assert to_dict(run_cfg)["model"] == state["config"]["model"]
    with pytest.raises(ConfigError, match=r"trainer.steps \(60 in the run, 80 now\)"):
        run.prepare(compose_cfg([f"resume={run.path}", "trainer.steps=80"]), True, ["resume", "trainer.steps"])
    assert not (run.path / ".hydra").exists()  # an in-process run: the checkpoint holds the config
    assert run.saved_config().trainer.steps == 60


def test_load_rebuilds_the_run_from_its_checkpoint(tmp_path):
    """``RunDir.load`` (sample, figures) takes the config inside the checkpoint, so a config file
    written over by another run's refused start cannot pair one run's weights with another's
    config."""
    from omegaconf import OmegaConf

    run = RunDir(_tiny_run(tmp_path / "run"))
    (run.path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"dataset": {"_target_": "imf_exp.data.Moons"}}), run.config_path)
    loaded = run.load("ema", "cpu")
    assert loaded.parts.dataset.name == "Circles" and loaded.step == 60 and not loaded.model.training
    with pytest.raises(ConfigError, match="does not exist"):
        RunDir(tmp_path / "nope").load()


# ---- integrity: one writer, no temp file left, checksums, a full disk -------------------------
SLOW_RUN = [*TINY, "trainer.steps=4000", "trainer.checkpoint_every=500", "trainer.eval_every=0",
            "trainer.compile=off"]


@pytest.mark.slow
def test_a_second_process_into_a_live_run_folder_is_refused(tmp_path):
    """Two processes started into one folder: the second is refused (exit 2, naming the holder)
    before it writes anything, and the first completes untouched."""
    run_dir = tmp_path / "run"
    first = start([*SLOW_RUN, "trainer.steps=1500", f"hydra.run.dir={run_dir}"])
    deadline = time.time() + 120
    while not ((run_dir / ".lock").is_file() and (run_dir / ".lock").read_text().strip()):
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    config_before = (run_dir / ".hydra" / "config.yaml").read_text()
    second = subprocess.run([sys.executable, "-m", "imf_exp.train", *SLOW_RUN, "seed=7",
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert second.returncode == 2, second.stderr
    assert f"process {first.pid} on host" in second.stderr and "in use" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == config_before
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml",
                                                                       "overrides.yaml"]
    state = RunDir(run_dir).load_checkpoint()
    assert state["step"] == 1500 and state["config"]["seed"] == 0
    assert json.loads((run_dir / "metrics.json").read_text())["config"]["seed"] == 0


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
    run = RunDir(tmp_path)
    (tmp_path / ".lock").write_text('{"host": "h", "pid": 999999, "since": "then"}')
    with caplog.at_level("WARNING"), run.lock():
        assert run.holder() is not None  # held now, by this process
        assert f'"pid": {os.getpid()}' in (tmp_path / ".lock").read_text()
    assert "took over the lock" in caplog.text and "process 999999 on host h" in caplog.text
    assert run.holder() is None and (tmp_path / ".lock").read_text() == ""


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_leaves_no_temp_file_after_the_next_start(tmp_path):
    """SIGKILL exactly while the first checkpoint's temporary file is written (its fsync): the
    temporary file stays behind; the next start in the folder removes it, says so, and the run
    completes to the same weights as an uninterrupted one."""
    run_dir, args = tmp_path / "run", [*TINY, "trainer.steps=100", "trainer.eval_every=0"]
    killer = ("import os, signal, sys; os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL); "
              "from imf_exp.train import cli; cli(sys.argv[1:])")
    killed = subprocess.run([sys.executable, "-c", killer, *args, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    temps = list(run_dir.glob(".checkpoint.pt.tmp*"))
    assert len(temps) == 1 and not (run_dir / CHECKPOINT).exists()
    again = start([*args, f"hydra.run.dir={run_dir}"])
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert "removed 1 temporary file(s) left by an interrupted write" in out
    assert not list(run_dir.rglob("*.tmp*"))
    full = tmp_path / "full"
    assert start([*args, f"hydra.run.dir={full}"]).wait(timeout=600) == 0
    assert same_weights(full, run_dir)


def test_a_flipped_bit_is_caught_by_the_checksum_and_the_previous_checkpoint_used(tmp_path, caplog):
    """A low mantissa bit flipped in checkpoint.pt still loads as weights; the checksum recorded
    when it was written catches it, and the previous checkpoint is used (with a warning)."""
    run = RunDir(_tiny_run(tmp_path / "run"))  # checkpoints at steps 50 and 60
    data = bytearray((run.path / CHECKPOINT).read_bytes())
    data[len(data) // 2] ^= 0x01
    (run.path / CHECKPOINT).write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        state = run.load_checkpoint()
    assert state["path"].endswith(PREVIOUS) and state["step"] == 50
    assert "checksum mismatch" in caplog.text and "using the previous good checkpoint" in caplog.text
    (run.path / PREVIOUS).write_bytes(bytes(data))  # both damaged: refused, naming both
    with pytest.raises(ConfigError, match="checksum mismatch.*checksum mismatch"):
        run.load_checkpoint()


def test_checkpoints_of_older_runs_without_checksums_still_load(tmp_path):
    run = RunDir(_tiny_run(tmp_path / "run"))
    (run.path / "checkpoint.sha256").unlink()
    assert run.load_checkpoint()["step"] == 60


@pytest.mark.parametrize("failure", ["enospc", "torch_short_write", "eacces"])
def test_a_failed_write_leaves_no_temp_file_and_says_why(tmp_path, failure):
    import errno

    from imf_exp.run_dir import WriteError, atomic_write

    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"partial")
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        if failure == "torch_short_write":
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(WriteError) as info:
        atomic_write(target, write, keep_previous=tmp_path / "checkpoint.prev.pt")
    message = str(info.value)
    if failure == "eacces":
        assert f"cannot write {target}" in message and "Permission denied" in message
    else:
        assert "no space left" in message and "checkpoint.pt" in message and "bytes free" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert target.read_bytes() == b"old"


@pytest.mark.slow
def test_a_full_disk_is_reported_as_such(tmp_path):
    """A real full disk (a 2 MiB tmpfs, nearly filled): the run stops with exit code 3 and one
    line naming the device and the file; no temporary file stays to keep the disk full."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the failure paths are tested above")
    try:
        run_dir = mount / "run"
        (mount / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 96 * 1024))
        proc = subprocess.run([sys.executable, "-m", "imf_exp.train", *TINY, "model.width=64",
                               "trainer.steps=50", f"hydra.run.dir={run_dir}"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 3, proc.stderr[-2000:]
        assert "no space left on the device" in proc.stderr and "checkpoint.pt" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_restart_in_a_run_folder_keeps_its_hydra_files(tmp_path, cli):
    """Hydra's files of a later start (``resume=``, a requeue) go to .hydra/resume-TIME/: the
    run's own .hydra/config.yaml is never overwritten."""
    run_dir = tmp_path / "run"
    assert cli(["-m", "imf_exp.train", *TINY, "trainer.steps=20", f"hydra.run.dir={run_dir}"],
               cwd=ROOT).returncode == 0
    before = (run_dir / ".hydra" / "config.yaml").read_text()
    proc = cli(["-m", "imf_exp.train", f"resume={run_dir}", "trainer.progress=false"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == before
    assert len(list((run_dir / ".hydra").glob("resume-*/config.yaml"))) == 1
