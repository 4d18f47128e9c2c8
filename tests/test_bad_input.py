"""One contract for bad input, as a table: every command refuses each case with exit code 2 and
one line naming the key (or file) and what is allowed, before any work, without a traceback,
and without changing a file of an existing run folder or leaving a stub folder behind."""

import hashlib
import os
from pathlib import Path

import pytest

from tests.conftest import run_in_process, train_in_process

TINY = ["trainer.steps=30", "trainer.batch_size=32", "model.width=16", "model.depth=1",
        "eval.n=50", "eval.floor_repeats=1", "eval.nfe=[1]", "trainer.eval_every=0",
        "trainer.checkpoint_every=10"]

# (command, arguments, fragments the one line must hold). {run}: a finished run folder,
# {sweep}: a finished sweep folder, {new}: a folder that does not exist yet, {file}: a file.
CASES = [
    # unknown keys, options and types (Hydra's composition), with "did you mean"
    ("train", ["trainer.stpes=100"], ["trainer.stpes", "did you mean trainer.steps?"]),
    ("train", ["foo=1"], ["foo", "not a key"]),
    ("train", ["+foo=1"], ["foo", "nothing would read it"]),
    ("train", ["+trainer.stpes=1"], ["trainer.stpes", "did you mean trainer.steps?"]),
    ("train", ["model.widht=3"], ["model.widht", "did you mean model.width?"]),
    ("train", ["dataset=circle"], ["dataset=circle", "did you mean circles?"]),
    ("train", ["objective=sgd"], ["objective=sgd", "flow_matching, imf, meanflow"]),
    ("train", ["model=transformer"], ["model=transformer", "mlp, resmlp"]),
    ("train", ["optimizer=sgd"], ["optimizer=sgd", "adam"]),
    ("train", ["guidance=cgf"], ["guidance=cgf", "did you mean cfg?"]),
    ("train", ["experiment=qualty"], ["experiment=qualty", "did you mean quality?"]),
    ("train", ["launcher=slrum"], ["launcher=slrum", "did you mean slurm?"]),
    ("train", ["launcher=jobib"], ["launcher=jobib", "did you mean joblib?"]),
    ("train", ["hparams_search=optna"], ["hparams_search=optna", "did you mean optuna?"]),
    ("train", ["trainer.steps=1.5"], ["trainer.steps", "an int"]),
    ("train", ["trainer.steps=many"], ["trainer.steps", "an int"]),
    ("train", ["seed=abc"], ["seed", "an int"]),
    ("train", ["optimizer.betas=0.9"], ["optimizer.betas", "a list"]),
    ("train", ["eval.nfe=2"], ["eval.nfe", "a list"]),
    ("train", ["trainer.compile=maybe"], ["trainer.compile", "auto, on, off"]),
    ("train", ["trainer.progress=sometimes"], ["trainer.progress", "true or false"]),
    ("train", ["model.activation=swish"], ["model.activation", "silu"]),
    ("train", ["model.embedding=wavelet"], ["model.embedding", "sinusoidal"]),
    ("train", ["optimizer.schedule=step"], ["optimizer.schedule", "cosine"]),
    ("train", ["optimizer.name=sgd"], ["optimizer.name", "adam, adamw"]),
    ("train", ["eval.ode_method=rk4"], ["eval.ode_method", "euler, midpoint"]),
    ("train", ["logger=wandb", "logger.mode=sometimes"], ["logger.mode", "online"]),
    ("train", ["seed=0,1"], ["seed=0,1", "-m"]),
    ("train", ["x=["], ["x=["]),
    ("train", ["dataset=custom"], ["dataset._target_", "missing"]),
    # numbers: finite and in range, every one
    ("train", ["trainer.steps=0"], ["trainer.steps=0", ">= 1"]),
    ("train", ["trainer.steps=-5"], ["trainer.steps", ">= 1"]),
    ("train", ["trainer.batch_size=0"], ["trainer.batch_size", ">= 1"]),
    ("train", ["trainer.batch_size=1000000000000"], ["trainer.batch_size", "16777216"]),
    ("train", ["trainer.ema_decay=1.0"], ["trainer.ema_decay", "[0, 1)"]),
    ("train", ["trainer.ema_decay=nan"], ["trainer.ema_decay", "finite"]),
    ("train", ["trainer.log_every=0"], ["trainer.log_every", ">= 1"]),
    ("train", ["trainer.eval_every=-1"], ["trainer.eval_every", ">= 0"]),
    ("train", ["trainer.checkpoint_every=-1"], ["trainer.checkpoint_every", ">= 0"]),
    ("train", ["trainer.max_bad_steps=-1"], ["trainer.max_bad_steps", ">= 0"]),
    ("train", ["trainer.data_pool=-1"], ["trainer.data_pool", ">= 0"]),
    ("train", ["trainer.sync_check=true", "trainer.max_bad_steps=2"], ["trainer.sync_check", "max_bad_steps"]),
    ("train", ["trainer.tf32=maybe"], ["trainer.tf32", "true or false"]),
    ("train", ["eval.n=5"], ["eval.n", ">= 10"]),
    ("train", ["eval.nfe=[0]"], ["eval.nfe", ">= 1"]),
    ("train", ["eval.nfe=[]"], ["eval.nfe", "non-empty"]),
    ("train", ["eval.ode_steps=[0]"], ["eval.ode_steps", "non-empty"]),
    ("train", ["eval.floor_repeats=0"], ["eval.floor_repeats", ">= 1"]),
    ("train", ["eval.plot_n=0"], ["eval.plot_n", ">= 1"]),
    ("train", ["eval.seed=-1"], ["eval.seed", "[0,"]),
    ("train", ["seed=-1"], ["seed=-1", "[0,"]),
    ("train", ["seed=100000000000000000000000"], ["seed", "[0, 9223372036854775807]"]),
    ("train", ["threads=0"], ["threads", ">= 1"]),
    ("train", ["device=tpu"], ["device='tpu'", "cuda:N"]),
    ("train", ["device=cuda:x"], ["device='cuda:x'", "cuda:N"]),
    ("train", ["optimizer.lr=0"], ["optimizer.lr", "> 0"]),
    ("train", ["optimizer.lr=-1"], ["optimizer.lr", "> 0"]),
    ("train", ["optimizer.lr=inf"], ["optimizer.lr=inf", "finite"]),
    ("train", ["optimizer.lr=nan"], ["optimizer.lr=nan", "finite"]),
    ("train", ["optimizer.weight_decay=inf"], ["optimizer.weight_decay=inf", "finite"]),
    ("train", ["optimizer.weight_decay=-1"], ["optimizer.weight_decay", ">= 0"]),
    ("train", ["optimizer.eps=0"], ["optimizer.eps", "> 0"]),
    ("train", ["optimizer.warmup_steps=-1"], ["optimizer.warmup_steps", ">= 0"]),
    ("train", ["optimizer.min_lr_ratio=2"], ["optimizer.min_lr_ratio", "[0, 1]"]),
    ("train", ["optimizer.grad_clip=-1"], ["optimizer.grad_clip", ">= 0"]),
    ("train", ["optimizer.betas=[0.9]"], ["optimizer.betas", "two numbers"]),
    ("train", ["optimizer.betas=[1.0,0.9]"], ["optimizer.betas", "[0, 1)"]),
    ("train", ["time_sampler.p_equal=2"], ["time_sampler.p_equal", "[0, 1]"]),
    ("train", ["time_sampler.p_equal=-0.1"], ["time_sampler.p_equal", "[0, 1]"]),
    ("train", ["time_sampler=logit_normal", "time_sampler.sigma=0"], ["time_sampler.sigma", "> 0"]),
    ("train", ["time_sampler=logit_normal", "time_sampler.sigma=inf"], ["time_sampler.sigma=inf", "finite"]),
    ("train", ["time_sampler=logit_normal", "time_sampler.mu=nan"], ["time_sampler.mu=nan", "finite"]),
    ("train", ["time_sampler.mu=0"], ["time_sampler.mu", "not a key"]),
    ("train", ["model.width=0"], ["model.width", ">= 1"]),
    ("train", ["model.depth=0"], ["model.depth", ">= 1"]),
    ("train", ["model.embedding_dim=3"], ["model.embedding_dim", "even"]),
    ("train", ["model.embedding_scale=0"], ["model.embedding_scale", "> 0"]),
    ("train", ["model.embedding_scale=inf"], ["model.embedding_scale=inf", "finite"]),
    ("train", ["model.max_period=1"], ["model.max_period", "> 1"]),
    ("train", ["model.input_fourier=-1"], ["model.input_fourier", ">= 0"]),
    ("train", ["model.input_fourier_scale=inf"], ["model.input_fourier_scale=inf", "finite"]),
    ("train", ["model.input_fourier_scale=0"], ["model.input_fourier_scale", "> 0"]),
    ("train", ["model.time_input=r"], ["model.time_input", "t,t-r"]),
    ("train", ["model=resmlp", "model.expansion=0"], ["model.expansion", ">= 1"]),
    ("train", ["+model.dim=3"], ["model.dim"]),
    ("train", ["objective.norm_p=-1"], ["objective.norm_p", ">= 0"]),
    ("train", ["objective.norm_eps=0"], ["objective.norm_eps", "> 0"]),
    ("train", ["boundary_mode.aux_weight=-1"], ["boundary_mode.aux_weight", ">= 0"]),
    ("train", ["dataset.noise=-0.1"], ["dataset.noise", ">= 0"]),
    ("train", ["dataset.factor=1.5"], ["dataset.factor", "(0, 1)"]),
    ("train", ["dataset.std=[inf,1]"], ["dataset.std[0]=inf", "finite"]),
    ("train", ["dataset.mean=[nan,0]"], ["dataset.mean[0]=nan", "finite"]),
    ("train", ["dataset.std=[1]"], ["dataset.mean/dataset.std", "2 entries"]),
    ("train", ["dataset.std=[1,0]"], ["dataset.std", "> 0"]),
    ("train", ["dataset=checkerboard", "dataset.squares=3"], ["dataset.squares", "even"]),
    ("train", ["dataset=eight_gaussians", "dataset.radius=0"], ["dataset.radius", "> 0"]),
    ("train", ["dataset=digits", "dataset.holdout=5"], ["dataset.holdout", "[100, 1297]"]),
    ("train", ["guidance=cfg", "dataset=checkerboard"], ["guidance=cfg needs class labels", "guidance=none"]),
    ("train", ["guidance=cfg", "guidance.omega_max=0.5"], ["guidance.omega_max", ">= 1"]),
    ("train", ["guidance=cfg", "guidance.p_drop=1"], ["guidance.p_drop", "[0, 1)"]),
    ("train", ["guidance=cfg", "guidance.t_lo_range=[0.6,0.7]"], ["guidance.t_lo_range", "t_hi_range"]),
    ("train", ["guidance=cfg", "guidance.eval_omega=[0.5]"], ["guidance.eval_omega", ">= 1"]),
    # custom datasets: checked once up front, the class named in every message
    ("train", ["dataset=custom", "dataset._target_=nope.Missing"], ["dataset", "nope.Missing"]),
    ("train", ["dataset=custom", "dataset._target_=tests.helpers.Bad", "+dataset.what=dim"],
     ["dataset Bad", "dim='two'"]),
    ("train", ["dataset=custom", "dataset._target_=tests.helpers.Bad", "+dataset.what=boom"],
     ["dataset Bad.sample", "ValueError: boom"]),
    ("train", ["dataset=custom", "dataset._target_=tests.helpers.Bad", "+dataset.what=shape"],
     ["dataset Bad.sample", "shape"]),
    ("train", ["dataset=custom", "dataset._target_=tests.helpers.Bad", "+dataset.what=nonfinite"],
     ["dataset Bad", "not finite"]),
    ("train", ["dataset=custom", "dataset._target_=tests.helpers.Bad", "+dataset.what=labels"],
     ["dataset Bad", "labels in [5, 5]", "num_classes=2"]),
    ("train", ["dataset=custom", "dataset._target_=tests.helpers.Bad", "+dataset.what=no_labels"],
     ["dataset Bad", "no labels"]),
    # run folders
    ("train", ["resume={new}"], ["resume=", "does not exist"]),
    ("train", ["resume={file}"], ["resume=", "does not exist"]),
    ("train", ["resume={empty}"], ["resume=", "no checkpoint"]),
    ("train", ["resume={run}", "model.width=64"], ["model.width (16 in the run, 64 now)"]),
    ("train", ["resume={run}", "trainer.steps=40"], ["trainer.steps (30 in the run, 40 now)"]),
    ("train", ["hydra.run.dir={run}", *TINY, "model.width=48"], ["another config", "model.width"]),
    ("train", ["hydra.run.dir={file}/run"], ["hydra.run.dir", "is a file"]),
    ("train", ["hydra.sweep.dir={file}/sweep", "-m", "seed=0,1"], ["hydra.sweep.dir", "is a file"]),
    # sweeps: every value checked before the first job
    ("train", ["-m", "trainer.batch_size=64,abc"], ["trainer.batch_size", "abc", "an int"]),
    ("train", ["-m", "dataset=moons,circle"], ["dataset=circle", "did you mean circles?"]),
    ("train", ["-m", "time_sampler.p_equal=0.5,1.5"], ["time_sampler.p_equal", "1.5"]),
    ("train", ["-m", "seed=0,1", "optimizer.lr=0,inf"], ["optimizer.lr"]),
    # sample
    ("sample", ["{new}"], ["does not exist"]),
    ("sample", ["{empty}"], ["config.yaml is missing"]),
    ("sample", [], ["no run folder given"]),
    ("sample", ["{run}", "n=0"], ["n=0", "[1,"]),
    ("sample", ["{run}", "n=100000000000"], ["n=100000000000", "10000000"]),
    ("sample", ["{run}", "n=abc"], ["n", "an int"]),
    ("sample", ["{run}", "nfe=0"], ["nfe=0"]),
    ("sample", ["{run}", "nfe=two"], ["nfe", "an int"]),
    ("sample", ["{run}", "seed=-1"], ["seed=-1", ">= 0"]),
    ("sample", ["{run}", "weights=best"], ["weights", "ema, raw"]),
    ("sample", ["{run}", "coords=polar"], ["coords", "native, standardized"]),
    ("sample", ["{run}", "device=bogus"], ["device='bogus'", "cuda:N"]),
    ("sample", ["{run}", "out={file}/x.npy"], ["out=", "is a file"]),
    ("sample", ["{run}", "out=x.txt"], ["out=", ".npy or .npz"]),
    ("sample", ["{run}", "ode_method=rk4"], ["ode_method", "euler, midpoint"]),
    ("sample", ["{run}", "ode_method=midpoint"], ["ode_method=midpoint", "flow-matching runs only"]),
    ("sample", ["{run}", "omega=2"], ["['omega'] apply to guided runs only"]),
    ("sample", ["{run}", "class=3"], ["['class'] apply to guided runs only"]),
    ("sample", ["{run}", "colour=red"], ["colour", "not a key"]),
    ("sample", ["{run}", "interval=0.2,0.9,1"], ["interval"]),
    # figures
    ("figures", ["{new}"], ["does not exist"]),
    ("figures", ["{empty}"], ["config.yaml is missing"]),
    ("figures", [], ["no run folder given"]),
    ("figures", ["{run}", "colour=red"], ["colour", "not a key"]),
    ("figures", ["{run}", "wandb=sometimes"], ["wandb", "offline"]),
    ("figures", ["{run}", "out={file}/figs"], ["out=", "is a file"]),
    # report
    ("report", ["{new}"], ["does not exist"]),
    ("report", [], ["no sweep folder given"]),
    ("report", ["{run}"], ["single run", "not of a sweep"]),
    ("report", ["{empty}"], ["holds no job folders"]),
    ("report", ["{sweep}", "metric=bogus"], ["metric='bogus'", "no job has this metric"]),
    ("report", ["{sweep}", "metric=nfe1/w2_ratoi"], ["did you mean nfe1/w2_ratio"]),
    ("report", ["{sweep}", "columns=foo,nfe1/w2"], ["columns='foo'", "no job has this metric"]),
    ("report", ["{sweep}", "metric=[1"], ["metric=[1"]),
    ("report", ["{blocked_sweep}"], ["report", "is a file"]),
    ("report", ["{sweep}", "eval=nothing"], ["eval='nothing'", "imf_exp.evaluate"]),
    # evaluate
    ("evaluate", ["{new}"], ["path=", "no such folder"]),
    ("evaluate", [], ["no path folder given"]),
    ("evaluate", ["{empty}"], ["neither a run folder nor a sweep folder"]),
    ("evaluate", ["{run}", "seeds=1,1"], ["seeds=[1, 1]", "distinct ints >= 0"]),
    ("evaluate", ["{run}", "seeds=-1"], ["seeds=[-1]", "distinct ints >= 0"]),
    ("evaluate", ["{run}", "seeds=a"], ["seeds"]),
    ("evaluate", ["{run}", "n=5"], ["n=5", "[10, 100000]"]),
    ("evaluate", ["{run}", "name=a/b"], ["name='a/b'", "without '/'"]),
    ("evaluate", ["{run}", "weights=best"], ["weights", "ema, raw"]),
    ("evaluate", ["{sweep}", "device=bogus"], ["device='bogus'", "cuda:N"]),
    ("evaluate", ["{run}", "colour=red"], ["colour", "not a key"]),
]


def _commands():
    from imf_exp import evaluate, figures, report, sample, train

    return {"train": train.cli, "sample": sample.cli, "figures": figures.cli, "report": report.cli,
            "evaluate": evaluate.cli}


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A finished run folder, a sweep folder of two finished jobs (run in this process, the
    layout a multirun writes), an empty folder, a file, a sweep whose report path is a file."""
    import shutil

    base = tmp_path_factory.mktemp("bad_input")
    run = train_in_process(TINY, base / "run")
    sweep = base / "sweep"
    for job, seed in enumerate((0, 1)):
        train_in_process([*TINY, f"seed={seed}"], sweep / str(job))
        (sweep / str(job) / ".hydra").mkdir()
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    blocked = base / "blocked_sweep"
    shutil.copytree(sweep, blocked)
    (blocked / "report").write_text("a file where the report folder goes")
    (base / "empty").mkdir()
    (base / "file").write_text("x")
    return {"run": run, "sweep": sweep, "empty": base / "empty", "file": base / "file",
            "new": base / "new", "blocked_sweep": blocked}


@pytest.mark.parametrize("command,args,fragments", CASES,
                         ids=[f"{c}:{' '.join(a)}"[:60] for c, a, _ in CASES])
def test_bad_input_is_refused_in_one_line(command, args, fragments, folders, capsys, monkeypatch):
    monkeypatch.chdir(folders["empty"].parent)  # outputs/ of a refused run would appear here
    before = {k: _checksums(v) for k, v in folders.items() if v.is_dir()}
    argv = [a.format(**{k: str(v) for k, v in folders.items()}) for a in args]
    if command == "train" and not any(a.startswith(("hydra.run.dir", "resume", "hydra.sweep")) for a in argv):
        argv.append(f"hydra.run.dir={folders['new']}")
    code, _, err = run_in_process(_commands()[command], argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not folders["new"].exists() and not (folders["empty"].parent / "outputs").exists()
    assert {k: _checksums(v) for k, v in folders.items() if v.is_dir()} == before
    assert os.listdir(folders["empty"]) == []


def test_the_table_covers_every_command_and_class():
    by_command = {}
    for command, _, _ in CASES:
        by_command[command] = by_command.get(command, 0) + 1
    assert by_command["train"] >= 100 and min(by_command.values()) >= 6, by_command


def test_hydra_full_error_shows_the_traceback(capsys, monkeypatch):
    """``HYDRA_FULL_ERROR=1`` turns the one line back into the exception with its traceback."""
    from imf_exp.errors import ConfigError
    from imf_exp.train import cli

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="trainer.stpes"):
        cli(["trainer.stpes=1"])
