"""Every command: ``--help`` exits 0; the shorthands users type are spelled out for Hydra. (Bad
command lines: tests/test_bad_input.py.)"""

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("command", ["train", "sample", "figures", "report", "evaluate", "bench"])
def test_help_exits_zero(command):
    proc = run_cli(["-m", f"imf_exp.{command}", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert f"imf_exp.{command}" in proc.stdout or "usage" in proc.stdout.lower(), proc.stdout


def test_comma_lists_and_positional_folders_are_spelled_out():
    from imf_exp.cli import normalize

    assert normalize(["runs/a b", "interval=0.2,0.9", "class=0.7,0.3", "n=5"], "run",
                     lists=("interval",), strings=("class",)) == [
        "run='runs/a b'", "interval=[0.2,0.9]", "class='0.7,0.3'", "n=5"]
    assert normalize(["class=null"], strings=("class",)) == ["class='null'"]
    assert normalize(["columns=[a,b]"], lists=("columns",)) == ["columns=[a,b]"]
    assert normalize(["seeds=7", "columns=null"], lists=("seeds", "columns")) == ["seeds=[7]", "columns=null"]
    assert normalize(["recipe=null", "experiment=null", "n=null"]) == ["~recipe", "~experiment", "n=null"]
