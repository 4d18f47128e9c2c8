"""The prepared CUDA check: its arguments and summary on any machine, a dry run of every part on
the CPU, and the real check where a GPU is present (marked ``cuda``)."""

import json

import pytest
import torch

from imf_exp import cuda_check


def test_arguments():
    args = cuda_check.parse_args([])
    assert args.device == "cuda" and args.steps == 600 and args.parts == list(cuda_check.PARTS)
    assert "bench" not in cuda_check.parse_args(["--no-bench"]).parts
    assert cuda_check.parse_args(["--parts", "sync,custom"]).parts == ["sync", "custom"]
    for bad in (["--parts", "sync,warp"], ["--steps", "3"]):
        with pytest.raises(SystemExit) as info:
            cuda_check.parse_args(bad)
        assert info.value.code == 2


def test_without_cuda_a_cuda_check_stops_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as info:
        cuda_check.main(["--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "CUDA is not available" in err[0]


def test_summary_says_what_each_part_saw():
    result = {"device": "cuda", "device_name": "Some GPU", "torch": "2.x", "parts": {
        "sync": {"status": "pass", "seconds": 12.5, "compile_off": {"steps_per_s": 300.0},
                 "compile_on": {"steps_per_s": 900.0}},
        "resume": {"status": "fail", "seconds": 3.0, "error": "AssertionError: no warning"},
        "bench": {"status": "skipped", "seconds": 0.0, "why": "needs CUDA"}}}
    text = cuda_check.summary(result)
    lines = text.splitlines()
    assert lines[0] == "cuda_check on cuda (Some GPU), torch 2.x"
    assert "compile_off: 300 steps/s, compile_on: 900 steps/s; no host sync in any step" in lines[1]
    assert "fail" in lines[2] and "no warning" in lines[2] and "needs CUDA" in lines[3]
    assert lines[-1] == "FAILED: resume"


@pytest.mark.slow
def test_a_dry_run_of_every_part_on_the_cpu(tmp_path):
    """Every part that does not need CUDA runs on the CPU (tiny models, 40 steps): the script's
    own logic is exercised wherever the tests run; the CUDA-only parts say they were skipped."""
    out = tmp_path / "check.json"
    result = cuda_check.main(["--device", "cpu", "--quick", "--steps", "40", "--out", str(out)])
    statuses = {name: part["status"] for name, part in result["parts"].items()}
    assert statuses == {"sync": "pass", "resume": "skipped", "guided": "pass", "custom": "pass",
                        "sample_figures": "pass", "bench": "skipped"}, result["parts"]
    assert json.loads(out.read_text())["parts"]["custom"]["NumpySampler"]["status"] == "completed"
    assert result["parts"]["sample_figures"]["shape"] == [4096, 2]


@pytest.mark.cuda
def test_the_cuda_check_passes_on_a_gpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; run `python -m imf_exp.cuda_check` on a GPU machine")
    result = cuda_check.main(["--no-bench", "--steps", "300", "--out", str(tmp_path / "c.json")])
    assert all(p["status"] == "pass" for p in result["parts"].values()), result["parts"]
