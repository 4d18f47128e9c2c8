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


def run_cli(args, cwd, env_extra=None, timeout=600):
    """Run a module of the package as a user would; returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
