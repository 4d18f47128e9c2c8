"""Every option of every config group composes and builds; bad values are refused by name."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from imf_exp.config import register_configs
from imf_exp.errors import ConfigError
from imf_exp.train import build
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
    model, ds = parts["model"], parts["dataset"]
    x, _ = ds.sample(8, torch.Generator().manual_seed(0))
    r, t = torch.rand(2, 8).sort(0).values
    assert model(x, r, t).shape == (8, ds.dim)
    assert model.velocity(x, t).shape == (8, ds.dim)
    assert (model.v_head is not None) == parts["boundary"].aux_head
    e = torch.randn_like(x)
    loss, logs = parts["objective"](model, x, e, r, t, parts["boundary"])
    assert loss.dim() == 0 and torch.isfinite(loss) and "loss" in logs


def test_user_sampler_through_custom_option():
    cfg = make(["dataset=custom", "dataset._target_=tests.test_data.Ring", "+dataset.radius=2.0"])
    ds = build(cfg)["dataset"]
    assert ds.name == "Ring" and ds.inner.radius == 2.0


@pytest.mark.parametrize("override,key,allowed", [
    ("trainer.steps=0", "trainer.steps", ">= 1"),
    ("trainer.batch_size=-4", "trainer.batch_size", ">= 1"),
    ("trainer.ema_decay=1.0", "trainer.ema_decay", "[0, 1)"),
    ("time_sampler.p_equal=1.5", "time_sampler.p_equal", "[0, 1]"),
    ("time_sampler=logit_normal time_sampler.sigma=0", "time_sampler.sigma", "> 0"),
    ("optimizer.lr=0", "optimizer.lr", "> 0"),
    ("optimizer.schedule=step", "optimizer.schedule", "cosine"),
    ("model.time_input=r", "model.time_input", "t,t-r"),
    ("model.embedding=wavelet", "model.embedding", "sinusoidal"),
    ("model.activation=swish", "model.activation", "silu"),
    ("dataset.noise=-0.1", "dataset.noise", ">= 0"),
    ("eval.nfe=[0]", "eval.nfe", ">= 1"),
    ("device=tpu", "device", "cuda"),
    ("+model.dim=3", "model.dim=3", "dataset's dimension 2"),
    ("trainer.compile=maybe", "trainer.compile", "'auto', 'on', 'off'"),
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

    from imf_exp.train import complete_saved_config

    saved = OmegaConf.to_container(make(["trainer.steps=10"]), resolve=True)
    assert OmegaConf.to_container(complete_saved_config(dict(saved))) == saved
    for key in ("data_pool", "fused_update"):
        del saved["trainer"][key]
    del saved["eval"]["ode_diagnostic"], saved["guidance"]
    cfg = complete_saved_config(saved)
    parts = build(cfg)
    assert (cfg.trainer.data_pool, cfg.trainer.fused_update, cfg.eval.ode_diagnostic) == (0, False, False)
    assert type(parts["guidance"]).__name__ == "NoGuidance"
