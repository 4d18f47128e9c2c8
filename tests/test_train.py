"""``python -m imf_exp.train`` end to end, as a user runs it: the run folder and its contents."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg, run_cli

# a short run that learns visibly: the unweighted metric covers both rings early, where the
# default norm_p = 1 first collapses onto one ring (measured: W2 ratio 1.39 vs 2.1 untrained)
SMALL = ["trainer.steps=600", "trainer.batch_size=512", "model.width=128", "objective.norm_p=0",
         "eval.n=500", "eval.floor_repeats=1", "eval.nfe=[1,2]", "trainer.eval_every=300",
         "trainer.checkpoint_every=300", "trainer.log_every=50"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli(["-m", "imf_exp.train", "dataset=circles", f"hydra.run.dir={run_dir}", *SMALL])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.mark.slow
def test_run_writes_every_artifact(trained_run):
    run_dir, proc = trained_run
    # the console names the overrides and where the full config is, instead of printing it
    out = proc.stdout + proc.stderr
    assert f"the full config is in {run_dir / '.hydra' / 'config.yaml'}" in out
    assert "trainer.steps=600" in out and "_target_" not in out
    for rel in [".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "checkpoint.pt",
                "metrics.json", "samples/nfe1.npz", "samples/nfe2.npz", "figures/samples.png",
                "figures/loss.png"]:
        assert (run_dir / rel).is_file() and (run_dir / rel).stat().st_size > 0, rel
    for png in ["figures/samples.png", "figures/loss.png"]:
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["primary"] == "nfe1/w2_ratio"
    assert [e["step"] for e in metrics["evals"]] == [300, 600]
    assert [h["step"] for h in metrics["history"]] == list(range(50, 601, 50))
    for key in ["nfe1/w2", "nfe1/w2_ratio", "nfe1/precision", "nfe1/recall", "nfe1/mmd", "nfe2/w2_ratio"]:
        assert np.isfinite(metrics["final"][key]), key
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["step"] == 600
    assert {"model", "ema", "optimizer", "scheduler", "rng", "config"} <= set(state)
    assert {"torch", "numpy", "python", "data"} <= set(state["rng"])
    # samples: native = standardized * std + mean of the dataset
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    s = np.load(run_dir / "samples" / "nfe1.npz")
    assert s["native"].shape == s["standardized"].shape == (500, 2)
    np.testing.assert_allclose(s["native"], s["standardized"] * np.array(cfg.dataset.std)
                               + np.array(cfg.dataset.mean), rtol=1e-5, atol=1e-5)
    log_text = (run_dir / "train.log").read_text()
    assert "final:" in log_text and "nfe1/w2_ratio" in log_text


@pytest.mark.slow
def test_trained_beats_untrained(trained_run):
    from imf_exp.build import build
    from imf_exp.metrics import Evaluator

    run_dir, _ = trained_run
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    parts = build(cfg)  # seeds the initialization exactly as the run did
    ev = Evaluator(parts.dataset, cfg.eval.n, [1], seed=cfg.eval.seed, floor_repeats=1)
    untrained, _ = ev(parts.model)
    trained = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert trained["w2_floor"] == pytest.approx(untrained["w2_floor"])
    assert trained["nfe1/w2_ratio"] < 0.8 * untrained["nfe1/w2_ratio"]


@pytest.mark.slow
def test_in_process_train_equals_the_command_line(trained_run, tmp_path):
    """``train(cfg, folder)`` (what most tests use) writes what the command writes: the same
    final metrics and weights for the same config."""
    from tests.conftest import train_in_process

    run_dir, _ = trained_run
    other = train_in_process(["dataset=circles", *SMALL], tmp_path / "inproc")
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, other))
    assert a["final"] == b["final"]
    sa, sb = (torch.load(d / "checkpoint.pt", weights_only=False) for d in (run_dir, other))
    assert all(torch.equal(sa["ema"][k], sb["ema"][k]) for k in sa["ema"])


def test_train_returns_the_primary_metric(tmp_path):
    """The value a sweeper minimizes is metrics.json's primary value."""
    from imf_exp.train import train

    cfg = compose_cfg(["trainer.steps=20", "trainer.batch_size=32", "model.width=16", "model.depth=1",
                       "eval.n=50", "eval.floor_repeats=1", "eval.nfe=[1]", "trainer.progress=false"])
    value = train(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert value == metrics["primary_value"] == metrics["final"]["nfe1/w2_ratio"]
    assert metrics["train"]["steps"] == 20 and "cuda_peak_bytes" not in metrics["train"]


def test_unwritable_output_folder(tmp_path, capsys):
    from imf_exp.train import cli
    from tests.conftest import run_in_process

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_in_process(cli, [f"hydra.run.dir={blocker}/run"], capsys)
    assert code == 2 and "hydra.run.dir" in err and "is a file" in err
    assert "Traceback" not in err


def test_import_is_light():
    """The entry point imports no compiler, plotting or optimal-transport library until a run
    needs them (a bad command line answers fast)."""
    proc = run_cli(["-c", "import sys, imf_exp.train; print(sorted(m for m in sys.modules if m in "
                    "('torch._inductor', 'matplotlib', 'ot', 'sklearn', 'wandb')))"])
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
