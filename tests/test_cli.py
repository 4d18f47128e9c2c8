"""End to end through the command line, as a user runs it, into tmp_path."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

# a short run that learns visibly: the unweighted metric covers both rings early, where the
# default norm_p = 1 first collapses onto one ring (measured: W2 ratio 1.39 vs 2.1 untrained)
SMALL = ["trainer.steps=600", "trainer.batch_size=512", "model.width=128", "objective.norm_p=0",
         "eval.n=500", "eval.floor_repeats=1", "eval.nfe=[1,2]", "trainer.eval_every=300",
         "trainer.checkpoint_every=300", "trainer.log_every=50"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.conftest import ROOT, run_cli

    run_dir = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli(["-m", "imf_exp.train", "dataset=circles", f"hydra.run.dir={run_dir}", *SMALL],
                   cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.mark.slow
def test_run_writes_every_artifact(trained_run):
    run_dir, proc = trained_run
    assert "composed config" in proc.stdout + proc.stderr
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
    from imf_exp.metrics import Evaluator
    from imf_exp.train import build

    run_dir, _ = trained_run
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    parts = build(cfg)  # seeds the initialization exactly as the run did
    ev = Evaluator(parts["dataset"], cfg.eval.n, [1], seed=cfg.eval.seed, floor_repeats=1)
    untrained, _ = ev(parts["model"])
    trained = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert trained["w2_floor"] == pytest.approx(untrained["w2_floor"])
    assert trained["nfe1/w2_ratio"] < 0.8 * untrained["nfe1/w2_ratio"]


@pytest.mark.slow
def test_sample_command(trained_run, tmp_path):
    from tests.conftest import ROOT, run_cli

    run_dir, _ = trained_run
    out = tmp_path / "s.npy"
    proc = run_cli(["-m", "imf_exp.sample", str(run_dir), "n=3000", "nfe=1", f"out={out}"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    x = np.load(out)
    assert x.shape == (3000, 2)
    # native coordinates of circles: radii near 1 and 0.5, centred at the origin
    radius = np.linalg.norm(x, axis=1)
    assert abs(x.mean(0)).max() < 0.1 and 0.4 < np.median(radius) < 1.1
    proc = run_cli(["-m", "imf_exp.sample", str(run_dir), "n=10", "nfe=2"], cwd=ROOT)
    assert proc.returncode == 0
    z = np.load(run_dir / "samples" / "sample_nfe2_n10_seed0.npz")
    assert z["native"].shape == (10, 2) and z["standardized"].shape == (10, 2)
    proc = run_cli(["-m", "imf_exp.sample", str(run_dir), "omega=2"], cwd=ROOT)
    assert proc.returncode == 2 and "['omega'] apply to guided runs only" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args,fragments", [
    (["trainer.steps=0"], ["trainer.steps=0", ">= 1"]),
    (["trainer.batch_size=0"], ["trainer.batch_size", ">= 1"]),
    (["time_sampler.p_equal=2"], ["time_sampler.p_equal", "[0, 1]"]),
    (["model=transformer"], ["model/transformer", "resmlp"]),
    (["trainer.steps=many"], ["trainer.steps", "many"]),
    (["guidance=cfg", "dataset=checkerboard"], ["guidance=cfg needs class labels", "guidance=none"]),
])
def test_bad_input_stops_before_training(args, fragments, tmp_path, cli):
    from tests.conftest import ROOT

    run_dir = tmp_path / "bad"
    proc = cli(["-m", "imf_exp.train", f"hydra.run.dir={run_dir}", *args], cwd=ROOT)
    assert proc.returncode != 0
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "metrics.json").exists()


def test_unwritable_output_folder(tmp_path, cli):
    from tests.conftest import ROOT

    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = cli(["-m", "imf_exp.train", f"hydra.run.dir={blocker}/run"], cwd=ROOT)
    assert proc.returncode == 2 and "hydra.run.dir" in proc.stderr and "is a file" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,fragment", [
    (["{tmp}/missing"], "does not exist"),
    (["{tmp}"], "config.yaml is missing"),
    (["{tmp}", "n=0"], "n=0"),
    (["{tmp}", "colour=red"], "unknown argument"),
])
def test_sample_bad_input(args, fragment, tmp_path, cli):
    from tests.conftest import ROOT

    proc = cli(["-m", "imf_exp.sample", *[a.format(tmp=tmp_path) for a in args]], cwd=ROOT)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
