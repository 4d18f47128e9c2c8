"""``python -m imf_exp.sample``: samples from a run folder, its arguments and its errors."""

import numpy as np
import pytest

from imf_exp.sample import cli
from tests.conftest import run_cli, run_in_process, train_in_process

# learns both rings within 600 steps (the unweighted metric; see test_train)
RUN = ["dataset=circles", "trainer.steps=600", "trainer.batch_size=512", "model.width=128",
       "objective.norm_p=0", "eval.n=300", "eval.floor_repeats=1", "eval.nfe=[1]",
       "trainer.eval_every=0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_in_process(RUN, tmp_path_factory.mktemp("sample") / "run")


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    return train_in_process([*RUN, "dataset=moons", "guidance=cfg", "trainer.steps=100"],
                            tmp_path_factory.mktemp("sample") / "guided")


@pytest.mark.slow
def test_sample_command(run_dir, tmp_path):
    out = tmp_path / "s.npy"
    proc = run_cli(["-m", "imf_exp.sample", str(run_dir), "n=3000", "nfe=1", f"out={out}"])
    assert proc.returncode == 0, proc.stderr
    assert not (run_dir / ".hydra").exists() and not (run_dir / "outputs").exists()
    x = np.load(out)
    assert x.shape == (3000, 2)
    # native coordinates of circles: radii near 1 and 0.5, centred at the origin
    radius = np.linalg.norm(x, axis=1)
    assert abs(x.mean(0)).max() < 0.1 and 0.4 < np.median(radius) < 1.1


@pytest.mark.slow
def test_default_file_and_guided_only_keys(run_dir, capsys):
    code, out, err = run_in_process(cli, [str(run_dir), "n=10", "nfe=2"], capsys)
    assert code == 0, err
    z = np.load(run_dir / "samples" / "sample_nfe2_n10_seed0.npz")
    assert z["native"].shape == (10, 2) and z["standardized"].shape == (10, 2)
    code, _, err = run_in_process(cli, [str(run_dir), "omega=2"], capsys)
    assert code == 2 and "['omega'] apply to guided runs only" in err, err
    code, _, err = run_in_process(cli, [str(run_dir), "ode_method=midpoint"], capsys)
    assert code == 2 and "ode_method=midpoint applies to flow-matching runs only" in err, err


@pytest.mark.slow
def test_guided_file_names_keep_class_and_omega_apart(guided_run, capsys):
    """Drawing another class or scale never overwrites the previous file; .npz holds the labels."""
    for args in (["class=0", "omega=2"], ["class=1", "omega=2"], ["class=0.7,0.3"],
                 ["class=null", "interval=0.2,0.9"]):
        code, _, err = run_in_process(cli, [str(guided_run), "n=20", *args], capsys)
        assert code == 0, (args, err)
    names = sorted(p.name for p in (guided_run / "samples").glob("sample_*"))
    assert names == ["sample_nfe1_n20_seed0_class0.7-0.3_omega1.npz", "sample_nfe1_n20_seed0_class0_omega2.npz",
                     "sample_nfe1_n20_seed0_class1_omega2.npz",
                     "sample_nfe1_n20_seed0_classnull_omega1_interval0.2-0.9.npz"]
    labels = np.load(guided_run / "samples" / "sample_nfe1_n20_seed0_class1_omega2.npz")["labels"]
    assert labels.tolist() == [1] * 20
    null = np.load(guided_run / "samples" / "sample_nfe1_n20_seed0_classnull_omega1_interval0.2-0.9.npz")
    assert null["labels"].tolist() == [2] * 20  # the null label of a two-class dataset


def test_help_exits_zero(capsys):
    code, out, _ = run_in_process(cli, ["--help"], capsys)
    assert code == 0 and "python -m imf_exp.sample RUN_DIR" in out and "nfe: 1" in out
