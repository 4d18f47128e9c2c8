"""Per-dataset recipes (conf/recipe/<dataset>.yaml, chosen by ``dataset=``) and the contenders of
``experiment=equal_budget``: what each composes to, and who wins when they disagree."""

import pytest

from tests.conftest import CONF, compose_cfg

RECIPE_DATASETS = ("moons", "eight_gaussians", "checkerboard", "swissroll", "spirals")


def key(cfg):
    return (cfg.objective.norm_p, cfg.time_sampler.p_equal, cfg.trainer.steps,
            cfg.trainer.eval_every, cfg.trainer.checkpoint_every)


def test_every_recipe_names_a_dataset_option():
    recipes = {p.stem for p in (CONF / "recipe").glob("*.yaml")}
    assert recipes == set(RECIPE_DATASETS)
    assert recipes <= {p.stem for p in (CONF / "dataset").glob("*.yaml")}


@pytest.mark.parametrize("dataset", RECIPE_DATASETS)
def test_the_dataset_brings_its_recipe(dataset):
    assert key(compose_cfg([f"dataset={dataset}"])) == (0.0, 0.25, 8000, 2000, 2000)


@pytest.mark.parametrize("dataset", ["circles", "digits", "custom"])
def test_datasets_without_a_recipe_keep_the_defaults(dataset):
    assert key(compose_cfg([f"dataset={dataset}"])) == (1.0, 0.5, 4000, 1000, 1000)


def test_the_command_line_overrides_the_recipe():
    cfg = compose_cfg(["dataset=moons", "objective.norm_p=1", "trainer.steps=300",
                       "time_sampler=logit_normal"])
    assert key(cfg)[:3] == (1.0, 0.25, 300)
    assert cfg.time_sampler._target_.endswith("LogitNormalTimeSampler")
    assert compose_cfg(["dataset=moons", "~recipe"]).objective.norm_p == 1.0


@pytest.mark.parametrize("experiment", ["objectives", "boundary", "time_sampler", "weighting",
                                        "time_embedding"])
def test_ablations_leave_the_recipes_out(experiment):
    base = compose_cfg([f"experiment={experiment}", "dataset=circles"])
    moons = compose_cfg([f"experiment={experiment}", "dataset=moons"])
    assert key(moons) == key(base) and moons.trainer.steps == 2000


@pytest.mark.parametrize("contender,target,steps,primary", [
    ("imf", "imf_exp.objectives.IMF", 8000, [1, 2, 4]),
    ("flow_matching", "imf_exp.objectives.FlowMatching", 13000, [1, 2, 4]),
])
def test_equal_budget_contenders_keep_the_recipe_and_set_the_budget(contender, target, steps, primary):
    cfg = compose_cfg(["experiment=equal_budget", "dataset=moons", f"contender={contender}"])
    assert cfg.objective._target_ == target and cfg.objective.norm_p == 0.0
    assert cfg.time_sampler.p_equal == 0.25  # the recipe's data and time settings, both contenders
    assert (cfg.trainer.steps, cfg.trainer.eval_every, cfg.trainer.checkpoint_every) == (steps, 0, 0)
    assert list(cfg.eval.ode_steps) == [100] and list(cfg.eval.nfe) == primary


@pytest.mark.parametrize("off", ["recipe=null", "~recipe"])
def test_recipe_null_on_the_command_line_leaves_the_recipe_out(off, capsys):
    from imf_exp.train import cli
    from tests.conftest import run_in_process

    code, out, err = run_in_process(cli, ["dataset=moons", off, "--cfg", "job"], capsys)
    assert code == 0, err
    assert "norm_p: 1.0" in out and "p_equal: 0.5" in out and "steps: 4000" in out


def test_the_quality_preset_is_the_same_for_every_dataset():
    moons, circles = (compose_cfg(["experiment=quality", f"dataset={d}"]) for d in ("moons", "circles"))
    assert key(moons) == key(circles) == (0.0, 0.5, 8000, 2000, 2000)
    assert moons.trainer.batch_size == 2048


@pytest.mark.parametrize("dataset,recipe", [("moons", True), ("circles", False)])
def test_a_run_says_which_recipe_it_trained_with(dataset, recipe, tmp_path, capsys):
    from imf_exp.train import cli
    from tests.conftest import run_in_process

    tiny = ["trainer.steps=5", "trainer.batch_size=16", "model.width=8", "model.depth=1",
            "eval.n=20", "eval.floor_repeats=1", "eval.nfe=[1]", "trainer.eval_every=0",
            "trainer.checkpoint_every=0", "trainer.progress=false", "threads=1"]
    code, _, err = run_in_process(cli, [f"dataset={dataset}", *tiny, f"hydra.run.dir={tmp_path}"], capsys)
    assert code == 0, err
    log = (tmp_path / "train.log").read_text()
    assert "overrides: " in log
    assert ("recipe: conf/recipe/moons.yaml" in log) == recipe
