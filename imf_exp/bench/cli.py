"""``python -m imf_exp.bench``: the flags, the two presets and the run (see :mod:`imf_exp.bench`)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from imf_exp.bench import report
from imf_exp.bench.quality import TTQ_THRESHOLD, time_to_quality
from imf_exp.bench.ratios import compute_ratios
from imf_exp.bench.timing import measure
from imf_exp.bench.variants import ROOT, build_variants
from imf_exp.devices import select_device
from imf_exp.errors import ConfigError

FULL = dict(rounds=7, warmup=20, steps_per_round=50, batch_sizes=[256, 1024, 4096, 16384],
            threads=None,
            note=dict(width=64, depth=3, embedding_dim=64, batch=256), default_overrides=[],
            compiled_in=("a", "b", "c"))
QUICK = dict(rounds=3, warmup=2, steps_per_round=5, batch_sizes=[64, 256], threads=1,
             note=dict(width=32, depth=2, embedding_dim=16, batch=64),
             default_overrides=["model.width=16", "model.depth=1", "model.embedding_dim=8",
                                "trainer.batch_size=64"],
             compiled_in=("a",))  # each compilation costs 5-20 s on a small CPU


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m imf_exp.bench", description="Side-by-side timings of one full training step (see the imf_exp.bench docstring)",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="tiny models and few steps: a smoke test")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON to write (default: outputs/bench/<timestamp>/bench.json)")
    p.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=None,
                   help="batch sizes of the sweep (c), comma-separated (default 256,1024,4096,16384)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds (default 7)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 20)")
    p.add_argument("--steps-per-round", type=int, default=None,
                   help="steps per variant per round at batch <= 1024 (default 50); larger "
                        "batches run proportionally fewer, at least 3")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled variants")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: 1 with --quick, else torch's choice; "
                        "on a shared CPU, 1 thread avoids OpenMP threads spinning at barriers "
                        "while another process holds the core)")
    p.add_argument("--compile-cache", choices=["fresh", "default"], default=None,
                   help="inductor cache: a fresh empty folder (cold compile; default) or the "
                        "user's (default with --quick)")
    p.add_argument("--time-to-quality", action="store_true",
                   help="also run the default training and time it until nfe1/w2_ratio < 1.3")
    p.add_argument("--ttq-threshold", type=float, default=TTQ_THRESHOLD)
    p.add_argument("--ttq-overrides", nargs="*", default=[],
                   help="extra Hydra overrides for the time-to-quality run (e.g. trainer.steps=400)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("rounds", "warmup", "steps_per_round", "batch_sizes", "threads"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.compile_cache is None:
        args.compile_cache = "default" if args.quick else "fresh"
    if args.rounds < 1 or args.warmup < 0 or args.steps_per_round < 1 or min(args.batch_sizes) < 1:
        p.error("--rounds and --steps-per-round must be >= 1, --warmup >= 0, batch sizes >= 1")
    return args


def device_or_exit(name: str) -> torch.device:
    """The device of ``--device``; exit status 2 with one line where CUDA is missing."""
    try:
        return select_device(name)
    except ConfigError:
        print(f"--device {name}: CUDA is not available here", file=sys.stderr)
        raise SystemExit(2) from None


def output_path(out: Path | None) -> Path:
    """``--out``, or ``outputs/bench/<timestamp>/bench.json``; its folder is created."""
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out = (out or ROOT / "outputs" / "bench" / stamp / "bench.json").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def run_settings(args: argparse.Namespace, preset: dict) -> dict:
    """The settings of this run (the JSON's ``settings``, before those of the variants)."""
    return {"quick": args.quick, "rounds": args.rounds, "warmup": args.warmup,
            "steps_per_round": args.steps_per_round, "batch_sizes": args.batch_sizes,
            "compile": not args.no_compile,
            "compiled_in": [] if args.no_compile else list(preset["compiled_in"])}


@contextlib.contextmanager
def inductor_cache(mode: str) -> Iterator[None]:
    """``fresh``: inductor compiles into a new empty folder (a cold compile), removed at the end.
    ``TORCHINDUCTOR_CACHE_DIR`` stays set, so the time-to-quality run compiles cold as well."""
    cache_dir = None
    if mode == "fresh":
        cache_dir = tempfile.mkdtemp(prefix="imf_bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    try:
        yield
    finally:
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)


def main(argv=None) -> dict:
    """Build and time every variant, write the JSON, print the table, sweep and ratios."""
    args = parse_args(argv)
    device = device_or_exit(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = output_path(args.out)
    preset = QUICK if args.quick else FULL
    with inductor_cache(args.compile_cache):
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        load_start = report.loadavg()
        print(f"bench: device {device} ({report.device_name(device)}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; writing {out}", flush=True)
        variants, settings = build_variants(args, preset, device)
        measure(variants, args.rounds, args.warmup, device)
    by_name = {v.name: v for v in variants}
    ratios, notes = compute_ratios(by_name, settings, args.batch_sizes)
    ttq = None
    if args.time_to_quality:
        ttq = time_to_quality(out.parent, device, args.ttq_threshold, args.ttq_overrides,
                              args.threads)

    command = [sys.executable, "-m", "imf_exp.bench", *(argv if argv is not None else sys.argv[1:])]
    result = report.result_json(command, report.environment(device, args.compile_cache, load_start),
                                {**run_settings(args, preset), **settings}, variants, ratios, notes,
                                ttq)
    out.write_text(json.dumps(result, indent=2, allow_nan=True))

    print()
    report.print_table(variants)
    report.print_sweep(by_name, settings["c"]["sweep"])
    if ttq is not None:
        report.print_time_to_quality(ttq)
    report.print_ratios(ratios, notes)
    print(f"\nwrote {out}")
    return result
