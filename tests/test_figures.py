"""Figures of a run folder: what they draw, the files they write, and the command line."""

import json
import struct
import time

import numpy as np
import pytest
import torch
from torch import nn

from imf_exp.data.base import Dataset
from imf_exp.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN = ["dataset=circles", "trainer.steps=200", "trainer.batch_size=256", "model.width=64",
       "eval.n=300", "eval.floor_repeats=1", "eval.nfe=[1,2]", "trainer.eval_every=100",
       "trainer.checkpoint_every=100", "trainer.compile=off", "trainer.progress=false"]


def png_size(path):
    """``(width, height)`` in pixels of a PNG file, after checking its magic bytes."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_plausible_png(path, min_kb=8):
    width, height = png_size(path)
    assert 150 <= width <= 3000 and 150 <= height <= 3000, (path, width, height)
    assert min_kb * 1024 < path.stat().st_size < 3 * 2**20, (path, path.stat().st_size)
    return width, height


class Gaussian(Dataset):
    """Standard normal points in ``dim`` dimensions (no reference sample needed)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        super().__init__([0.0] * dim, [1.0] * dim)

    def sample_native(self, n, generator):
        return torch.randn(n, self.dim, generator=generator), None


class Constant(nn.Module):
    """``u(z, r, t) = c`` and ``v(z, t) = c``: every sampler maps ``z_1`` to ``z_1 - c``."""

    def __init__(self, c) -> None:
        super().__init__()
        self.register_buffer("c", torch.as_tensor(c, dtype=torch.float32))

    def forward(self, z, r, t):
        assert r.shape == t.shape == (z.shape[0],) and bool((r <= t).all())
        return self.c.expand_as(z)

    def velocity(self, z, t):
        return self.c.expand_as(z)


class Shrink(nn.Module):
    """A small closed-form model on images: ``u(z, r, t) = z - w`` (one step lands on ``w``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, dim))

    def forward(self, z, r, t):
        return z - self.w

    def velocity(self, z, t):
        return z - self.w


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.conftest import train_in_process

    return train_in_process(RUN, tmp_path_factory.mktemp("figures") / "run")


@pytest.fixture(scope="module")
def loaded(run_dir):
    from imf_exp.run_dir import RunDir

    run = RunDir(run_dir).load("ema", "cpu")
    return run.model, run.parts.dataset, run.parts.objective.sampling


@pytest.mark.slow  # trains the module's run folder once (about 6 s)
def test_cli_writes_every_png_and_prints_them(run_dir, tmp_path):
    from tests.conftest import ROOT, run_cli

    out = tmp_path / "figs"
    proc = run_cli(["-m", "imf_exp.figures", str(run_dir), f"out={out}"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("samples", "loss", "fields", "transport", "training", "samplers"):
        path = out / f"{name}.png"
        assert str(path) in proc.stdout, (name, proc.stdout)
        assert_plausible_png(path)
    assert not (run_dir / ".hydra").exists() and not (ROOT / ".hydra").exists()
    width, height = png_size(out / "fields.png")
    assert width > 1.5 * height  # 4 (r, t) columns, u and v rows


@pytest.mark.slow  # trains the module's run folder once (about 6 s)
def test_make_figures_is_fast_and_defaults_into_the_run_folder(run_dir, loaded):
    from imf_exp.figures import make_figures

    model, dataset, sampling = loaded
    assert sampling == "average"
    start = time.perf_counter()
    written = make_figures(run_dir, model=model, dataset=dataset, sampling=sampling)
    seconds = time.perf_counter() - start
    assert set(written) == {"samples", "loss", "fields", "transport", "training", "samplers"}
    assert all(p.parent == run_dir / "figures" and p.is_file() for p in written.values())
    assert seconds < 10, f"make_figures took {seconds:.1f} s (budget about 5 s)"
    assert not model.training  # left in eval mode, as it came


@pytest.mark.slow  # trains the module's run folder once (about 6 s)
def test_make_figures_skips_what_does_not_apply(tmp_path, loaded):
    from imf_exp.figures import make_figures

    model, dataset, _ = loaded
    written = make_figures(tmp_path, model=model, dataset=dataset, sampling="ode")
    assert set(written) == {"fields", "transport", "samplers"}  # no step files: no training sheet
    images = make_figures(tmp_path, tmp_path / "img", model=Shrink(64), dataset=Gaussian(64),
                          sampling="average")
    assert set(images) == {"samplers"}  # no plane to draw for 64-D data
    assert_plausible_png(images["samplers"], min_kb=4)


@pytest.mark.slow  # trains the module's run folder once (about 6 s)
def test_cli_errors_name_the_argument(tmp_path, run_dir, capsys):
    from imf_exp.figures import cli
    from tests.conftest import run_in_process

    missing = tmp_path / "no_such_run"
    code, _, err = run_in_process(cli, [str(missing)], capsys)
    assert code == 2 and str(missing) in err
    code, _, err = run_in_process(cli, [str(run_dir), "colour=red"], capsys)
    assert code == 2 and err.startswith("Error: ") and "colour=red" in err and "out" in err
    code, _, err = run_in_process(cli, [], capsys)
    assert code == 2 and "run" in err  # no run folder given
    code, _, err = run_in_process(cli, [str(tmp_path)], capsys)  # not a run folder
    assert code == 2 and "config.yaml" in err
    assert not (tmp_path / "figures").exists()


def test_plane_figures_refuse_other_dims(tmp_path):
    from imf_exp.figures import plot_fields, plot_transport

    with pytest.raises(ConfigError, match=r"dim=3"):
        plot_fields(Constant([1.0, 0.0, 0.0]), Gaussian(3), tmp_path / "f.png")
    with pytest.raises(ConfigError, match=r"dim=3"):
        plot_transport(Constant([1.0, 0.0, 0.0]), Gaussian(3), tmp_path / "t.png")
    with pytest.raises(ConfigError, match="pairs"):
        plot_fields(Constant([1.0, 0.0]), Gaussian(2), tmp_path / "f.png", pairs=[(0.6, 0.2)])
    with pytest.raises(ConfigError, match="sampling"):
        plot_transport(Constant([1.0, 0.0]), Gaussian(2), tmp_path / "t.png", sampling="sde")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # trains the module's run folder once (about 6 s)
def test_segments_end_at_the_one_step_sample(loaded):
    from imf_exp.figures import one_step_segments

    model, _, _ = loaded
    z1 = torch.randn(50, 2, generator=torch.Generator().manual_seed(3))
    start, end = one_step_segments(model, z1, "average")
    with torch.no_grad():
        direct = z1 - model(z1, torch.zeros(50), torch.ones(50))
    np.testing.assert_array_equal(start, z1.numpy())
    np.testing.assert_allclose(end, direct.numpy(), atol=1e-6)
    # a flow-matching run: 100 Euler steps on v instead, which is not the one-step map
    _, ode_end = one_step_segments(model, z1, "ode")
    assert np.abs(ode_end - end).max() > 1e-3


@pytest.mark.parametrize("sampling", ["average", "ode"])
def test_segments_of_a_constant_field_are_shifts(sampling):
    from imf_exp.figures import one_step_segments

    z1 = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    start, end = one_step_segments(Constant([0.5, -2.0]), z1, sampling)
    np.testing.assert_allclose(end, start - np.array([0.5, -2.0]), atol=1e-5)


def test_transport_and_fields_draw_any_2d_model(tmp_path):
    from imf_exp.figures import plot_fields, plot_transport

    model = Constant([0.5, -2.0])
    assert_plausible_png(plot_transport(model, Gaussian(2), tmp_path / "t.png", n=50, sampling="ode"))
    width, height = assert_plausible_png(
        plot_fields(model, Gaussian(2), tmp_path / "f.png", pairs=[(0.0, 1.0)], grid=5))
    assert height > 1.5 * width  # one (r, t) column: u above v


@pytest.mark.slow  # trains the module's run folder once (about 6 s)
def test_eval_step_files_follow_eval_every(run_dir):
    from imf_exp.figures import training_panels
    from imf_exp.run_dir import RunDir

    cfg = RunDir(run_dir).saved_config()
    every, steps = cfg.trainer.eval_every, cfg.trainer.steps
    files = RunDir(run_dir).eval_step_files()
    assert [s for s, _ in files] == list(range(every, steps + 1, every))
    assert all(p.name == f"step{s:07d}_nfe1.npz" for s, p in files)
    ratios = {e["step"]: e["nfe1/w2_ratio"]
              for e in json.loads((run_dir / "metrics.json").read_text())["evals"]}
    panels = training_panels(run_dir)
    assert [(s, p) for s, p, _ in panels] == files
    for step, _, title in panels:
        assert f"step {step}" in title and f"{ratios[step]:.2f}" in title


def fake_run(folder, dim, steps, samplers=("nfe1",)):
    """A run folder with only samples at evaluation steps (written in scrambled order)."""
    (folder / "samples").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for step in reversed(steps):
        for sampler in samplers:
            x = rng.normal(size=(40, dim)).astype(np.float32)
            np.savez(folder / "samples" / f"step{step:07d}_{sampler}.npz", standardized=x,
                     native=8 + 8 * x)
    np.savez(folder / "samples" / "nfe1.npz", standardized=x, native=x)  # final: not a step file
    return folder


def test_eval_step_files_sorts_by_step_and_keeps_one_sampler(tmp_path):
    from imf_exp.figures import training_panels
    from imf_exp.run_dir import RunDir

    run = fake_run(tmp_path / "run", 2, [50, 100, 1000, 12000], samplers=("nfe1", "ode100"))
    assert [s for s, _ in RunDir(run).eval_step_files()] == [50, 100, 1000, 12000]
    assert {p.name.split("_")[1] for _, p in RunDir(run).eval_step_files()} == {"nfe1.npz"}
    assert {p.name.split("_")[1] for _, p in RunDir(run).eval_step_files("ode100")} == {"ode100.npz"}
    assert RunDir(tmp_path / "nothing").eval_step_files() == []
    # a long run: at most max_panels panels, first and last kept; titles without metrics.json
    many = fake_run(tmp_path / "many", 2, list(range(10, 401, 10)))
    panels = training_panels(many, max_panels=6)
    assert len(panels) == 6 and panels[0][0] == 10 and panels[-1][0] == 400
    assert panels[0][2] == "step 10"
    evals = [{"step": 10, "nfe1/w2_ratio": 3.14159}]
    assert "3.14" in training_panels(many, evals=evals, max_panels=6)[0][2]


def test_training_sheet_images_and_errors(tmp_path):
    from imf_exp.figures import plot_training_sheet

    run = fake_run(tmp_path / "digits", 64, [100, 200, 300])
    width, height = assert_plausible_png(plot_training_sheet(run, tmp_path / "tr.png"), min_kb=4)
    assert width > 2 * height  # three panels side by side
    with pytest.raises(ConfigError, match="step"):
        plot_training_sheet(tmp_path, tmp_path / "none.png")


@pytest.mark.slow  # trains the module's run folder once (about 6 s)
def test_sampler_sheet_rows(tmp_path, loaded):
    from imf_exp.figures import plot_sampler_sheet

    model, dataset, _ = loaded
    _, both = assert_plausible_png(plot_sampler_sheet(model, dataset, tmp_path / "a.png", n=300))
    _, ode_only = assert_plausible_png(
        plot_sampler_sheet(model, dataset, tmp_path / "o.png", n=300, sampling="ode"))
    assert ode_only < 0.7 * both  # no average-velocity row for a flow-matching run
    assert_plausible_png(plot_sampler_sheet(Shrink(64), Gaussian(64), tmp_path / "i.png",
                                            nfe=(1, 2), ode_steps=(1, 10), n=50), min_kb=4)
    with pytest.raises(ConfigError, match="nfe"):
        plot_sampler_sheet(model, dataset, tmp_path / "x.png", nfe=(0,))
