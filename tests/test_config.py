"""The schema is the one source of defaults; every option of every group composes and builds;
bad values are refused by name."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from imf_exp.build import build
from imf_exp.config import register_configs
from imf_exp.errors import ConfigError
from tests.conftest import CONF

register_configs()
GROUPS = {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in CONF.iterdir() if d.is_dir()}
OPTIONS = [(g, o) for g, opts in GROUPS.items() for o in opts
           if g != "hparams_search" and o != "custom"]


def make(overrides=()):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_every_group_has_options():
    for group in ("model", "dataset", "time_sampler", "boundary_mode", "optimizer", "objective", "logger"):
        assert GROUPS[group], group
    assert {"mlp", "resmlp"} <= set(GROUPS["model"])
    assert {"moons", "circles", "eight_gaussians", "checkerboard", "swissroll", "spirals"} <= set(GROUPS["dataset"])
    assert {"shared", "aux_head"} <= set(GROUPS["boundary_mode"])


@pytest.mark.parametrize("group,option", OPTIONS)
def test_option_composes_and_builds(group, option):
    cfg = make([f"{group}={option}"])
    parts = build(cfg)
    model, ds = parts.model, parts.dataset
    x, _ = ds.sample(8, torch.Generator().manual_seed(0))
    r, t = torch.rand(2, 8).sort(0).values
    assert model(x, r, t).shape == (8, ds.dim)
    assert model.velocity(x, t).shape == (8, ds.dim)
    assert (model.v_head is not None) == parts.boundary.aux_head
    e = torch.randn_like(x)
    loss, logs = parts.objective(model, x, e, r, t, parts.boundary)
    assert loss.dim() == 0 and torch.isfinite(loss) and "loss" in logs


def test_user_sampler_through_custom_option():
    cfg = make(["dataset=custom", "dataset._target_=tests.test_data.Ring", "+dataset.radius=2.0"])
    ds = build(cfg).dataset
    assert ds.name == "Ring" and ds.inner.radius == 2.0


@pytest.mark.parametrize("override,key,allowed", [
    ("trainer.steps=0", "trainer.steps", ">= 1"),
    ("trainer.batch_size=-4", "trainer.batch_size", ">= 1"),
    ("trainer.ema_decay=1.0", "trainer.ema_decay", "[0, 1)"),
    ("time_sampler.p_equal=1.5", "time_sampler.p_equal", "[0, 1]"),
    ("time_sampler=logit_normal time_sampler.sigma=0", "time_sampler.sigma", "> 0"),
    ("optimizer.lr=0", "optimizer.lr", "> 0"),
    ("model.time_input=r", "model.time_input", "t,t-r"),
    ("dataset.noise=-0.1", "dataset.noise", ">= 0"),
    ("eval.nfe=[0]", "eval.nfe", ">= 1"),
    ("device=tpu", "device", "cuda"),
    ("+model.dim=3", "model.dim=3", "dataset's dimension 2"),
    ("guidance=cfg dataset=checkerboard", "guidance=cfg needs class labels", "use guidance=none"),
    ("guidance=cfg dataset=swissroll", "dataset SwissRoll has none", "moons, circles"),
    ("guidance=cfg guidance.omega_max=0.5", "guidance.omega_max", ">= 1"),
    ("dataset=digits dataset.holdout=5", "dataset.holdout", "[100, 1297]"),
])
def test_bad_values_name_key_and_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        build(make(override.split()))
    assert key in str(info.value) and allowed in str(info.value)


@pytest.mark.parametrize("override,fragment", [
    ("trainer.steps=abc", "trainer.steps"),
    ("model.width=wide", "model.width"),
    ("model.widht=3", "widht"),
    # closed choices are Enums of the schema: refused at composition, with the allowed names
    ("optimizer.schedule=step", "constant, cosine, linear"),
    ("model.embedding=wavelet", "sinusoidal, fourier, raw"),
    ("model.activation=swish", "silu, gelu, relu, tanh, softplus"),
    ("trainer.compile=maybe", "auto, on, off"),
    ("eval.ode_method=rk4", "euler, midpoint"),
])
def test_wrong_types_and_unknown_keys_fail_at_composition(override, fragment):
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        make([override])
    text = str(info.value) + str(info.value.__cause__ or "")
    assert fragment in text


def test_unknown_group_option_lists_the_allowed_ones():
    with pytest.raises(ConfigCompositionException) as info:
        make(["model=transformer"])
    assert "model/transformer" in str(info.value) and "resmlp" in str(info.value)


def test_saved_config_of_an_older_run_is_completed():
    """A run folder written before ``trainer.data_pool``/``fused_update``, ``eval.ode_diagnostic``
    and the guidance group existed still rebuilds (resume, sample) with their defaults; a current
    config comes back unchanged."""
    from omegaconf import OmegaConf

    from imf_exp.build import complete_saved_config

    saved = OmegaConf.to_container(make(["trainer.steps=10"]), resolve=True)
    assert OmegaConf.to_container(complete_saved_config(dict(saved))) == saved
    for key in ("data_pool", "fused_update"):
        del saved["trainer"][key]
    del saved["eval"]["ode_diagnostic"], saved["guidance"]
    cfg = complete_saved_config(saved)
    parts = build(cfg)
    assert (cfg.trainer.data_pool, cfg.trainer.fused_update, cfg.eval.ode_diagnostic) == (0, False, False)
    assert type(parts.guidance).__name__ == "NoGuidance"


# ---- one source of defaults ------------------------------------------------------------------
def _schemas():
    from imf_exp.config import SCHEMAS

    return {(g, o): node for (g, o), node in SCHEMAS.items() if g is not None}


def test_option_files_choose_a_schema_and_restate_nothing():
    """``conf/<group>/<option>.yaml`` names ``/<group>_<option>_schema`` and sets no key: every
    default is the schema's (a key set with another value would be a second source)."""
    import dataclasses

    import yaml

    for (group, option), schema in _schemas().items():
        raw = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())
        assert raw["defaults"][0] == f"/{group}_{option}_schema@_here_", (group, option)
        defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                             else f.default) for f in dataclasses.fields(schema)}
        for key, value in raw.items():
            if key != "defaults":
                assert key in defaults and value == defaults[key], (group, option, key, value)
        composed = make([f"{group}={option}"])[group]
        assert {k: composed[k] for k in defaults} == {k: v for k, v in defaults.items()}, (group, option)
    train = yaml.safe_load((CONF / "train.yaml").read_text())
    assert set(train) == {"defaults", "hydra"}  # train.yaml only chooses options


def test_constructor_defaults_are_the_schema_defaults():
    """The classes built from a group read their keyword defaults from the schema (no third
    place): each parameter named like a schema field defaults to that field's default in one of
    the options that build the class (adam's for OptimizerSpec, aux_head's for BoundaryMode).
    The one exception is documented in MLPConfig: the model classes keep input_fourier off."""
    import dataclasses
    import inspect

    from hydra.utils import get_class

    from imf_exp.config import default

    by_class: dict[str, list] = {}
    for (group, option), schema in _schemas().items():
        by_class.setdefault(schema._target_, []).append((group, option, schema))
    checked = 0
    for target, options in by_class.items():
        for name, param in inspect.signature(get_class(target)).parameters.items():
            fields = [s for _, _, s in options if name in {f.name for f in dataclasses.fields(s)}]
            if not fields or param.default is inspect.Parameter.empty or name == "aux_head":
                continue
            if (target, name) == ("imf_exp.models.MLP", "input_fourier") or (
                    name in ("mean", "std") and param.default is None):
                continue  # documented: Fourier features off; statistics from a reference sample
            assert any(param.default == default(s, name) for s in fields), (target, name, param.default)
            checked += 1
    assert checked > 40
