"""Every command: ``--help`` exits 0, and a bad command line gets exit 2 and one line naming the
key or option and what is allowed, before any work and without a traceback."""

import pytest

from tests.conftest import run_cli, run_in_process


def _commands():
    from imf_exp import figures, report, sample, train

    return {"train": train.cli, "sample": sample.cli, "figures": figures.cli, "report": report.cli}


@pytest.mark.parametrize("command", ["train", "sample", "figures", "report", "bench"])
def test_help_exits_zero(command):
    proc = run_cli(["-m", f"imf_exp.{command}", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert f"imf_exp.{command}" in proc.stdout or "usage" in proc.stdout.lower(), proc.stdout


@pytest.mark.parametrize("args,fragments", [
    (["trainer.steps=0"], ["trainer.steps=0", ">= 1"]),
    (["trainer.batch_size=0"], ["trainer.batch_size", ">= 1"]),
    (["time_sampler.p_equal=2"], ["time_sampler.p_equal", "[0, 1]"]),
    (["model=transformer"], ["model=transformer", "resmlp"]),
    (["trainer.steps=many"], ["trainer.steps", "many"]),
    (["guidance=cfg", "dataset=checkerboard"], ["guidance=cfg needs class labels", "guidance=none"]),
    (["trainer.stpes=100"], ["trainer.stpes", "did you mean trainer.steps?"]),
    (["dataset=circle"], ["dataset=circle", "did you mean circles?"]),
    (["seed=abc"], ["seed", "an int"]),
    (["experiment=qualty"], ["experiment=qualty", "did you mean quality?"]),
    (["launcher=slrum"], ["launcher=slrum", "did you mean slurm?"]),
    (["+foo=1"], ["foo", "nothing would read it"]),
    (["trainer.compile=maybe"], ["trainer.compile", "auto, on, off"]),
    (["seed=0,1"], ["seed=0,1", "-m"]),
])
def test_train_bad_input_stops_before_training(args, fragments, tmp_path, capsys):
    from imf_exp.train import cli

    run_dir = tmp_path / "bad"
    code, _, err = run_in_process(cli, [f"hydra.run.dir={run_dir}", *args], capsys)
    assert code == 2
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("command,args,fragment", [
    ("figures", ["{tmp}/missing"], "does not exist"),
    ("figures", ["{tmp}", "colour=red"], "colour"),
    ("figures", ["{tmp}", "wandb=sometimes"], "wandb"),
    ("report", ["{tmp}/missing"], "does not exist"),
    ("report", ["{tmp}", "metric=[1"], "metric"),
    ("sample", ["{tmp}", "nfe=two"], "nfe"),
])
def test_other_commands_refuse_bad_input_in_one_line(command, args, fragment, tmp_path, capsys):
    code, _, err = run_in_process(_commands()[command], [a.format(tmp=tmp_path) for a in args], capsys)
    assert code == 2 and fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "figures").exists() and not (tmp_path / "outputs").exists()


def test_comma_lists_and_positional_folders_are_spelled_out():
    from imf_exp.cli import normalize

    assert normalize(["runs/a b", "interval=0.2,0.9", "class=0.7,0.3", "n=5"], "run",
                     lists=("interval",), strings=("class",)) == [
        "run='runs/a b'", "interval=[0.2,0.9]", "class='0.7,0.3'", "n=5"]
    assert normalize(["class=null"], strings=("class",)) == ["class='null'"]
    assert normalize(["columns=[a,b]"], lists=("columns",)) == ["columns=[a,b]"]
