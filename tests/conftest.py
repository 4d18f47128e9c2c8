import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
# tiny test models run fastest on one thread, and parallel test processes do not oversubscribe
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")


def compose_cfg(overrides=(), config_name="train"):
    """A config composed from ``conf/`` exactly as the command line composes it."""
    from hydra import compose, initialize_config_dir

    from imf_exp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def train_in_process(overrides, run_dir):
    """``imf_exp.train.train`` on a composed config, in this process (no Hydra run folder files:
    the config lives in the checkpoint); returns the run folder."""
    import torch

    from imf_exp.train import train

    threads = torch.get_num_threads()
    try:
        train(compose_cfg(["trainer.progress=false", *overrides]), run_dir)
    finally:
        torch.set_num_threads(threads)
    return Path(run_dir)


def run_cli(args, cwd=ROOT, env_extra=None, timeout=600):
    """Run a module of the package as a user would; returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_in_process(cli, argv, capsys):
    """A command's ``cli(argv)`` in this process: ``(exit code, stdout, stderr)``."""
    import logging

    argv_before, root = sys.argv[:], logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        cli(list(argv))
        code = 0
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    finally:  # Hydra configures logging for the app: its handlers hold this test's capture
        sys.argv[:] = argv_before
        root.handlers[:], root.level = handlers, level
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cli():
    return run_cli
