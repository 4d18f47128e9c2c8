"""The benchmark entry point: the compiled loss it times is the eager loss, and a quick run works."""

import json
import math

import pytest
import torch

from imf_exp.bench.quality import quality_times
from imf_exp.compile import compile_loss, own_code
from imf_exp.models import MLP
from tests.helpers import imf_loss_case

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def test_compiled_imf_loss_matches_eager():
    """Same weights, same batch: the compiled loss (JVP inside the graph) equals the eager one to
    float32 rounding, and so do the gradients. One compilation, through the bench's own path."""
    torch.manual_seed(0)
    loss_fn, loss_and_grads = imf_loss_case(MLP(2, width=16, depth=1, embedding_dim=8))

    eager_loss, eager_grads = loss_and_grads(loss_fn)
    breaks_before = sum(torch._dynamo.utils.counters["graph_break"].values())
    compiled_loss, compiled_grads = loss_and_grads(compile_loss(own_code(loss_fn, "test"),
                                                                dynamic=False))
    # the whole loss, JVP included, is one graph: nothing fell back to eager
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == breaks_before
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-7)
    for g_c, g_e in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-6)


def test_quality_times_reads_history_and_log(tmp_path):
    """The first eval under the threshold; training seconds from the history rows up to it,
    wall seconds between the log lines."""
    metrics = {
        "evals": [{"step": 200, "nfe1/w2_ratio": 2.0}, {"step": 400, "nfe1/w2_ratio": 1.25},
                  {"step": 600, "nfe1/w2_ratio": 1.1}],
        "history": [{"step": s, "steps_per_s": 50.0} for s in (100, 200, 300, 400, 500, 600)],
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "train.log").write_text(
        "[2026-01-01 10:00:00,000][__main__][INFO] - composed config:\n"
        "[2026-01-01 10:00:01,500][__main__][INFO] - run folder: /x\n"
        "[2026-01-01 10:00:06,000][imf_exp.trainer][INFO] - step 200: nfe1/w2_ratio=2.0\n"
        "[2026-01-01 10:00:12,250][imf_exp.trainer][INFO] - step 400: nfe1/w2_ratio=1.25\n")
    out = quality_times(tmp_path, 1.3)
    assert out["step"] == 400
    assert out["train_seconds"] == pytest.approx(400 / 50.0)
    assert out["wall_seconds"] == pytest.approx(10.75)
    never = quality_times(tmp_path, 1.0)
    assert never["step"] is None and never["train_seconds"] is None


@pytest.mark.slow
def test_quick_bench_writes_every_figure(tmp_path):
    from tests.conftest import ROOT, run_cli

    out = tmp_path / "b.json"
    proc = run_cli(["-m", "imf_exp.bench", "--quick", "--out", str(out)], cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    variants = result["variants"]
    for name in ["a/baseline", "a/imf_eager", "a/imf_compiled", "a/imf_fast", "a/meanflow",
                 "a/flow_matching_eager", "a/flow_matching_compiled", "b/imf_eager", "b/meanflow",
                 "b/flow_matching_eager", "c/imf_eager/b256", "c/flow_matching_eager/b256"]:
        v = variants[name]
        assert v["error"] is None, (name, v["error"])
        assert len(v["round_seconds"]) == result["settings"]["rounds"]
        for key in ("median_steps_per_s", "median_samples_per_s", "first_step_s"):
            assert math.isfinite(v[key]) and v[key] > 0, (name, key, v[key])
        assert v["memory"]["saved_bytes"] > 0 and v["memory"]["state_bytes"] > 0
    assert variants["a/imf_compiled"]["compile_s"] > 0
    ratios = result["ratios"]
    for key in ["a: imf_compiled / baseline steps/s", "a: imf_eager / baseline steps/s",
                "a: imf / flow_matching step cost, eager", "a: imf / flow_matching step cost, compiled",
                "b: imf / flow_matching step cost, eager", "a: meanflow / imf_eager step cost",
                "c: imf_eager samples/s b256 / b64", "a: imf compile seconds",
                "a: imf_fast / baseline steps/s"]:
        assert math.isfinite(ratios[key]) and ratios[key] > 0, (key, ratios[key])
    # the fixed-cost share is the linear fit through the two batch sizes, and it predicts the
    # samples/s ratio: k / (k - (k - 1) share) with k = 256 / 64
    t_lo = 1 / variants["b/imf_eager"]["median_steps_per_s"]  # --quick: the default batch is 64
    t_hi = 1 / variants["c/imf_eager/b256"]["median_steps_per_s"]
    share = ratios["c: imf_eager fixed-cost share of a b64 step (linear fit)"]
    assert share == pytest.approx((t_lo - 64 * (t_hi - t_lo) / 192) / t_lo)
    assert ratios["c: imf_eager samples/s b256 / b64"] == pytest.approx(4 / (4 - 3 * share))
    # the compile economics exist; what --quick does not measure is None with a reason
    assert math.isfinite(ratios["a: imf seconds saved by compile over 4000 steps"])
    for key, value in ratios.items():
        assert value is None and result["ratio_notes"][key] or math.isfinite(value), key
    assert result["environment"]["torch"] == torch.__version__
    # the ratios are printed last, after the table
    text = proc.stdout
    assert text.index("a/imf_compiled") < text.index("\nratios") < text.index("imf_compiled / baseline")
