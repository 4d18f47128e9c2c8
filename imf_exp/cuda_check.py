"""A prepared check of the CUDA path, for the first machine with a GPU (under 8 minutes on one).

    python -m imf_exp.cuda_check [--device cuda] [--steps 600] [--no-bench] [--out PATH]

Each part runs in this process (the benchmark in a subprocess) and records what it saw:

1. ``sync``: the default run (circles, the default model) for ``--steps`` steps on the device,
   eager and compiled, with ``trainer.sync_check=true``: ``torch.cuda.set_sync_debug_mode("error")``
   around every training step after the first, so a step that synchronizes the host fails it;
2. ``resume``: a CPU run resumed on the device and a device run resumed on the CPU complete,
   under the documented policy (the data generator is reseeded, with a warning);
3. ``guided``: a guided run (``guidance=cfg``, moons) on the device;
4. ``custom``: two custom datasets on the device, one drawing with the generator but no device
   (it is given a CPU generator), one returning numpy arrays;
5. ``sample_figures``: ``sample`` and ``figures`` of the device run, on the device;
6. ``bench``: ``python -m imf_exp.bench --device cuda --batch-sizes 4096,65536 --time-to-quality``
   and the GPU's name.

It prints one summary (a line per part) and writes ``outputs/cuda_check/<time>/cuda_check.json``.
``--device cpu`` runs the parts that do not need CUDA on the CPU (a dry run of the script).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("sync", "resume", "guided", "custom", "sample_figures", "bench")
NEEDS_CUDA = ("resume", "bench")  # meaningless on the CPU alone
QUICK = ["model.width=32", "model.depth=2", "trainer.batch_size=128", "eval.n=200",
         "eval.floor_repeats=1", "eval.nfe=[1]"]


class CpuOnlySampler:
    """A custom dataset written for the CPU: ``torch.rand(n, generator=generator)`` with no
    device (on a CUDA generator this raises; the dataset wrapper then hands it a CPU generator)."""

    dim = 2

    def sample(self, n, generator):
        theta = 2 * torch.pi * torch.rand(n, generator=generator)
        return torch.stack([theta.cos(), theta.sin()], 1) * 2.0


class NumpySampler:
    """A custom labelled dataset that returns numpy arrays (moved to the device by the wrapper)."""

    dim = 2
    num_classes = 2

    def sample(self, n, generator):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, n)
        return rng.normal(size=(n, 2)) * 0.3 + 2.0 * y[:, None], y


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m imf_exp.cuda_check",
                                description="A prepared check of the CUDA path (see the module docstring)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run (default cuda)")
    p.add_argument("--steps", type=int, default=600, help="training steps of each run (default 600)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--no-bench", action="store_true", help="leave out the benchmark")
    p.add_argument("--quick", action="store_true", help="tiny models: a smoke test of the script")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON to write (default outputs/cuda_check/<time>/cuda_check.json)")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"--parts: unknown {unknown}; allowed: {', '.join(PARTS)}")
    if args.steps < 10:
        p.error("--steps must be >= 10")
    args.parts = [x for x in parts if not (x == "bench" and args.no_bench)]
    return args


# ---- the parts -------------------------------------------------------------------------------
def _train(folder: Path, overrides: list[str]) -> dict:
    """``train`` in this process, resuming as the command does (``resume=``, or a checkpoint
    already in the folder); returns metrics.json."""
    from imf_exp.cli import compose
    from imf_exp.run_dir import RunDir
    from imf_exp.train import train

    overrides = ["trainer.progress=false", *overrides]
    keys = [o.split("=", 1)[0] for o in overrides]
    cfg, state = RunDir(folder).prepare(compose("train", overrides), "resume" in keys, keys)
    train(cfg, folder, state)
    return json.loads((folder / "metrics.json").read_text())


def part_sync(ctx: dict) -> dict:
    out = {}
    for mode in ("off", "on"):
        folder = ctx["dir"] / f"sync_compile_{mode}"
        metrics = _train(folder, [*ctx["base"], f"trainer.compile={mode}",
                                  f"trainer.sync_check={str(ctx['cuda']).lower()}"])
        out[f"compile_{mode}"] = {"steps_per_s": metrics["train"]["steps_per_s"],
                                  "nfe1/w2_ratio": metrics["final"]["nfe1/w2_ratio"],
                                  "cuda_peak_bytes": metrics["train"].get("cuda_peak_bytes")}
    ctx["device_run"] = ctx["dir"] / "sync_compile_on"
    return out


def _resume_on(ctx: dict, first: str, second: str) -> dict:
    """A run to the end on ``first``; its last checkpoint replaced by the one before (half way);
    then resumed on ``second``."""
    from imf_exp.run_dir import CHECKPOINT, DIGESTS, PREVIOUS

    folder = ctx["dir"] / f"resume_{first}_to_{second}"
    _train(folder, [*ctx["base"], f"device={first}", f"trainer.checkpoint_every={ctx['steps'] // 2}"])
    (folder / PREVIOUS).replace(folder / CHECKPOINT)
    (folder / DIGESTS).unlink()  # the shortened history has no recorded digests
    records = _capture_warnings(lambda: _train(folder, [*ctx["base"], f"device={second}",
                                                        f"resume={folder}"]))
    metrics = json.loads((folder / "metrics.json").read_text())
    reseeded = any("the data stream is reseeded" in r for r in records)
    if not reseeded or metrics["status"] != "completed":
        raise AssertionError(f"resume {first} -> {second}: status {metrics['status']}, reseed warning {reseeded}")
    return {"status": metrics["status"], "reseed_warning": reseeded,
            "nfe1/w2_ratio": metrics["final"]["nfe1/w2_ratio"]}


def part_resume(ctx: dict) -> dict:
    return {"cpu_to_device": _resume_on(ctx, "cpu", ctx["device"]),
            "device_to_cpu": _resume_on(ctx, ctx["device"], "cpu")}


def part_guided(ctx: dict) -> dict:
    metrics = _train(ctx["dir"] / "guided", [*ctx["base"], "dataset=moons", "guidance=cfg"])
    return {"nfe1/accuracy": metrics["final"].get("nfe1/accuracy"),
            "nfe1_w2/accuracy": metrics["final"].get("nfe1_w2/accuracy")}


def part_custom(ctx: dict) -> dict:
    out = {}
    for name in ("CpuOnlySampler", "NumpySampler"):
        metrics = _train(ctx["dir"] / f"custom_{name}",
                         [*ctx["base"], "dataset=custom", f"dataset._target_=imf_exp.cuda_check.{name}"])
        out[name] = {"status": metrics["status"], "nfe1/w2_ratio": metrics["final"]["nfe1/w2_ratio"]}
    return out


def part_sample_figures(ctx: dict) -> dict:
    from imf_exp.cli import compose
    from imf_exp.figures import figures
    from imf_exp.sample import sample

    run = ctx.get("device_run") or ctx["dir"] / "sync_compile_on"
    if not (run / "checkpoint.pt").exists():
        _train(run, [*ctx["base"], "trainer.compile=on"])
    path = sample(compose("sample", [f"run={run}", "n=4096", f"device={ctx['device']}"]))
    written = figures(compose("figures", [f"run={run}"]))
    return {"samples": str(path), "shape": list(np.load(path)["native"].shape), "figures": sorted(written)}


def part_bench(ctx: dict) -> dict:
    out = ctx["dir"] / "bench.json"
    cmd = [sys.executable, "-m", "imf_exp.bench", "--device", "cuda", "--batch-sizes", "4096,65536",
           "--time-to-quality", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420)
    (ctx["dir"] / "bench.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"the benchmark exited {proc.returncode}: {(proc.stderr or proc.stdout)[-500:]}")
    result = json.loads(out.read_text())
    return {"device_name": result["environment"]["device_name"], "ratios": result["ratios"],
            "time_to_quality": result.get("time_to_quality"), "json": str(out)}


# ---- running and reporting -------------------------------------------------------------------
def _capture_warnings(fn: Callable[[], object]) -> list[str]:
    """The warning messages logged while ``fn`` runs."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        fn()
    finally:
        logging.getLogger().removeHandler(handler)
    return records


def run_part(name: str, fn: Callable[[dict], dict], ctx: dict) -> dict:
    if name in NEEDS_CUDA and not ctx["cuda"]:
        return {"status": "skipped", "why": "needs CUDA", "seconds": 0.0}
    t0 = time.perf_counter()
    try:
        details = fn(ctx)
        return {"status": "pass", "seconds": time.perf_counter() - t0, **details}
    except Exception as err:  # noqa: BLE001 - recorded, the check goes on
        return {"status": "fail", "seconds": time.perf_counter() - t0,
                "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
                "traceback": traceback.format_exc()[-4000:]}


def summary(result: dict) -> str:
    """One line per part, then the verdict."""
    lines = [f"cuda_check on {result['device']} ({result['device_name']}), torch {result['torch']}"]
    for name, part in result["parts"].items():
        what = part.get("error") or part.get("why") or _headline(name, part)
        lines.append(f"  {name:15} {part['status']:7} {part['seconds']:7.1f} s  {what}")
    failed = [n for n, p in result["parts"].items() if p["status"] == "fail"]
    lines.append("all parts passed" if not failed else f"FAILED: {', '.join(failed)}")
    return "\n".join(lines)


def _headline(name: str, part: dict) -> str:
    if name == "sync":
        return ", ".join(f"{k}: {v['steps_per_s']:.0f} steps/s" for k, v in part.items()
                         if isinstance(v, dict) and "steps_per_s" in v) + "; no host sync in any step"
    if name == "bench":
        return f"{part.get('device_name')}; ratios in {part.get('json')}"
    if name == "sample_figures":
        return f"{part.get('shape')} samples, figures {', '.join(part.get('figures', []))}"
    return "ok"


def main(argv: list[str] | None = None) -> dict:
    from imf_exp.devices import select_device
    from imf_exp.errors import ConfigError

    args = parse_args(argv)
    try:
        device = select_device(args.device, key="--device")
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = (args.out or ROOT / "outputs" / "cuda_check" / stamp / "cuda_check.json").resolve()
    work = out.parent / "runs"
    shutil.rmtree(work, ignore_errors=True)
    cuda = device.type == "cuda"
    base = [f"device={device}", f"trainer.steps={args.steps}", "trainer.eval_every=0",
            f"trainer.checkpoint_every={args.steps}", *(QUICK if args.quick else [])]
    ctx = {"dir": work, "device": str(device), "cuda": cuda, "steps": args.steps, "base": base}
    result = {"created": dt.datetime.now().isoformat(timespec="seconds"), "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if cuda else "CPU",
              "torch": torch.__version__, "cuda": torch.version.cuda, "command": sys.argv, "parts": {}}
    for name in args.parts:
        print(f"cuda_check: {name} ...", flush=True)
        result["parts"][name] = run_part(name, globals()[f"part_{name}"], ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(summary(result))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    res = main()
    sys.exit(1 if any(p["status"] == "fail" for p in res["parts"].values()) else 0)
