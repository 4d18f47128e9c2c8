"""The report on synthetic sweep folders (no training): mixed primaries, columns=, image panels."""

import json

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir

from imf_exp.config import register_configs
from imf_exp.report import write_report
from tests.conftest import CONF


def make_job(sweep, num, overrides, primary, final, dim=2):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "metrics.json").write_text(json.dumps({"status": "completed", "primary": primary,
                                                  "final": final}))
    (job / "samples").mkdir()
    sampler = primary.split("/")[0]
    x = np.random.default_rng(num).standard_normal((50, dim)).astype(np.float32)
    np.savez(job / "samples" / f"{sampler}.npz", standardized=x, native=x)


def test_mixed_objectives_use_each_rows_own_primary(tmp_path):
    values = {"imf": [1.2, 1.4], "flow_matching": [3.0, 3.5]}
    num = 0
    for objective, ratios in values.items():
        sampler = "nfe1" if objective == "imf" else "ode1"
        for seed, ratio in enumerate(ratios):
            final = {f"{sampler}/w2_ratio": ratio, f"{sampler}/precision": 0.5, "w2_floor": 0.3}
            if objective == "flow_matching":
                final["ode100/w2_ratio"] = ratio / 3
            make_job(tmp_path, num, [f"objective={objective}", f"seed={seed}"],
                     f"{sampler}/w2_ratio", final)
            num += 1
    out = write_report(tmp_path)
    table = (out / "table.md").read_text()
    assert "primary/sampler" in table and "primary/w2_ratio" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "nfe1" in rows["imf"] and "1.3 ± 0.1414" in rows["imf"]
    assert "ode1" in rows["flow_matching"] and "3.25 ± 0.3536" in rows["flow_matching"]
    # explicit columns: a metric a row lacks is shown as a dash
    out = write_report(tmp_path, columns=["nfe1/w2_ratio", "ode100/w2_ratio"])
    rows = {line.split("|")[1].strip(): line for line in (out / "table.md").read_text().splitlines()
            if line.startswith("| ")}
    assert rows["imf"].rstrip(" |").endswith("–")
    assert f"{3.25 / 3:.4g}" in rows["flow_matching"]
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_image_datasets_get_mosaic_panels(tmp_path):
    for seed in range(2):
        make_job(tmp_path, seed, [f"seed={seed}", f"model.width={64 * (seed + 1)}"],
                 "nfe1/w2_ratio", {"nfe1/w2_ratio": 1.1, "nfe1/accuracy": 0.9, "nfe1/fd": 3.0},
                 dim=64)
    out = write_report(tmp_path)
    table = (out / "table.md").read_text()
    assert "nfe1/accuracy" in table and "nfe1/fd" in table
    assert (out / "samples.png").stat().st_size > 5000


@pytest.mark.parametrize("name,swept,jobs", [
    ("objectives", {"dataset", "objective", "seed"}, 54),
    ("boundary", {"dataset", "boundary_mode", "seed"}, 18),
    ("time_sampler", {"dataset", "time_sampler", "time_sampler.p_equal", "seed"}, 30),
    ("time_embedding", {"dataset", "model.time_input", "model.embedding_scale", "seed"}, 27),
    ("weighting", {"dataset", "objective.norm_p", "seed"}, 24),
    ("guidance_digits", {"seed"}, 3),
    ("equal_budget", {"dataset", "contender", "seed"}, 36),
])
def test_experiment_configs_compose_with_their_sweeps(name, swept, jobs):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    assert set(params) == swept
    count = 1
    for value in params.values():
        count *= len(str(value).replace('"t,r"', "a").replace('"t,t-r"', "b").split(","))
    assert count == jobs
    assert cfg.name == name and cfg.hydra.sweep.dir.startswith(f"outputs/experiments/{name}/")
    if name == "guidance_digits":
        assert cfg.dataset._target_ == "imf_exp.data.Digits" and cfg.guidance.eval_omega[0] == 1.0


def test_grid_of_two_swept_keys_draws_a_reference_per_row(tmp_path):
    """``grid=dataset,objective``: one row per dataset (its evaluation reference first), one
    column per objective (the first seed's samples, titled with the metrics over seeds)."""
    import struct

    from tests.conftest import compose_cfg

    num = 0
    for dataset in ("moons", "circles"):
        from imf_exp.config import to_dict

        config = {"dataset": to_dict(compose_cfg([f"dataset={dataset}"]).dataset), "eval": {"n": 50, "seed": 1}}
        for objective, sampler in (("imf", "nfe1"), ("flow_matching", "ode100")):
            for seed in (0, 1):
                make_job(tmp_path, num, [f"dataset={dataset}", f"objective={objective}", f"seed={seed}"],
                         f"{sampler}/w2_ratio", {f"{sampler}/w2_ratio": 1.1 + seed, f"{sampler}/precision": 0.9})
                metrics = json.loads((tmp_path / str(num) / "metrics.json").read_text())
                (tmp_path / str(num) / "metrics.json").write_text(json.dumps({**metrics, "config": config}))
                num += 1
    out = write_report(tmp_path, grid=["dataset", "objective"])
    data = (out / "grid.png").read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    assert data[:4] == b"\x89PNG" and width > 2 * 250 and height > 2 * 200  # 3 columns, 2 rows
    with pytest.raises(Exception, match="grid="):
        write_report(tmp_path, grid=["dataset", "model.width"])
