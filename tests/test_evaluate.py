"""``python -m imf_exp.evaluate``: a run re-scored under several evaluation seeds, and the report
of a sweep from those scores."""

import hashlib
import json
import math

import pytest

from tests.conftest import run_in_process, train_in_process

TINY = ["trainer.steps=40", "trainer.batch_size=64", "model.width=32", "model.depth=2",
        "eval.n=200", "eval.floor_repeats=2", "eval.nfe=[1,2]", "trainer.eval_every=0",
        "trainer.checkpoint_every=0"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep folder of two finished jobs (seeds 0 and 1), the layout a multirun writes."""
    base = tmp_path_factory.mktemp("evaluate") / "sweep"
    for job, seed in enumerate((0, 1)):
        train_in_process([*TINY, f"seed={seed}"], base / str(job))
        (base / str(job) / ".hydra").mkdir()
        (base / str(job) / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
    (base / "multirun.yaml").write_text("hydra: {}\n")
    return base


def evaluate(argv, capsys):
    from imf_exp.evaluate import cli

    code, out, err = run_in_process(cli, argv, capsys)
    assert code == 0, err
    return out


def test_the_runs_own_seed_reproduces_its_final_metrics_exactly(sweep, capsys):
    run = sweep / "0"
    before = hashlib.sha256((run / "metrics.json").read_bytes()).hexdigest()
    out = evaluate([str(run), "seeds=1234"], capsys)  # eval.seed's default
    result = json.loads((run / "eval" / "n200_seed1234.json").read_text())
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert result["mean"] == final and result["per_seed"] == [final]
    assert set(result["std"].values()) == {0.0} and result["step"] == 40 and result["n"] == 200
    assert result["primary"] == "nfe1/w2_ratio" and "nfe1/w2_ratio" in out
    assert hashlib.sha256((run / "metrics.json").read_bytes()).hexdigest() == before


def test_mean_and_std_over_seeds(sweep, capsys):
    run = sweep / "1"
    evaluate([str(run), "seeds=3,4,5", "n=150", "name=three"], capsys)
    result = json.loads((run / "eval" / "three.json").read_text())
    assert result["seeds"] == [3, 4, 5] and result["n"] == 150 and len(result["per_seed"]) == 3
    for key in ("nfe1/w2_ratio", "nfe2/precision", "w2_floor"):
        values = [m[key] for m in result["per_seed"]]
        mean = sum(values) / 3
        assert result["mean"][key] == pytest.approx(mean, rel=1e-12)
        assert result["std"][key] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 2),
                                                   rel=1e-9)
    floors = [m["w2_floor"] for m in result["per_seed"]]
    assert len(set(floors)) == 3  # each seed draws its own reference and floor
    single = json.loads(json.dumps(result["per_seed"][1]))
    evaluate([str(run), "seeds=4", "n=150", "name=four"], capsys)  # a seed alone: the same numbers
    assert json.loads((run / "eval" / "four.json").read_text())["mean"] == single


def test_a_sweep_is_evaluated_job_by_job_and_reported_from_the_means(sweep, capsys):
    from imf_exp.report import write_report

    out = evaluate([str(sweep), "seeds=0,1", "name=two"], capsys)
    assert out.count("over 2 seeds") == 2
    means = [json.loads((sweep / j / "eval" / "two.json").read_text())["mean"]["nfe1/w2_ratio"]
             for j in ("0", "1")]
    report = write_report(sweep, eval_name="two")
    rows = (report / "jobs.csv").read_text().splitlines()
    assert len(rows) == 3 and all(f"{m}" in "\n".join(rows) for m in means)
    table = (report / "table.md").read_text()
    assert f"| {sum(means) / 2:.4g} ± " in table
    (sweep / "1" / "eval" / "two.json").unlink()  # a job without the file: listed, not dropped
    jobs = (write_report(sweep, eval_name="two") / "jobs.csv").read_text()
    assert "not evaluated" in jobs
