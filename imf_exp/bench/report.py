"""What the benchmark writes: the JSON (every measurement) and the printed table, sweep, time to
quality and ratios (in that order: the ratios last)."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
from pathlib import Path

import torch

from imf_exp.bench.timing import Variant

MEASURED = {
    "steps_per_s": "median over interleaved rounds of steps / wall seconds of a round; "
                   "a step = data + loss (JVP) + backward + clip + optimizer + EMA",
    "compile_s": "first step's wall seconds minus the median step time",
    "round_cpu_seconds": "this process's CPU seconds per round (all threads); well "
                         "below threads * round_seconds: the machine was shared",
    "saved_bytes": "distinct storages saved for backward in one step (parameters "
                   "excluded): a lower bound of the step's activation peak",
    "state_bytes": "parameters + gradients + optimizer state + EMA copy",
    "cuda_peak_step_bytes": "CUDA only: max_memory_allocated during a step minus the "
                            "memory allocated before it",
}


def fmt(x, spec=".2f") -> str:
    if x is None:
        return "-"
    return format(x, spec) if math.isfinite(x) else str(x)


def loadavg() -> tuple | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- JSON --------------------------------------------------------------------------------------

def environment(device: torch.device, compile_cache: str, load_start: tuple | None) -> dict:
    return {
        "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "python": platform.python_version(),
        "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(), "cpu_count": os.cpu_count(),
        "loadavg_start": load_start, "loadavg_end": loadavg(), "compile_cache": compile_cache,
    }


def variant_json(v: Variant) -> dict:
    med = v.median_steps_per_s
    return {"config": v.config, "kind": v.kind, "model": v.model_desc, "batch": v.batch,
            "parameters": sum(p.numel() for p in v.model.parameters()) if v.model else None,
            "compiled": v.compiled, "error": v.error, "steps_per_round": v.steps_per_round,
            "round_seconds": v.round_seconds, "round_cpu_seconds": v.round_cpu_seconds,
            "round_steps_per_s": v.steps_per_s,
            "median_steps_per_s": med if v.round_seconds else None,
            "median_samples_per_s": med * v.batch if v.round_seconds else None,
            "median_ms_per_step": 1e3 / med if v.round_seconds else None,
            "first_step_s": v.first_step_s if math.isfinite(v.first_step_s) else None,
            "compile_s": v.compile_s, "compiled_graphs": v.graphs if v.compiled else None,
            "round_mean_loss": v.losses, "memory": v.memory}


def result_json(command: list[str], env: dict, settings: dict, variants: list[Variant],
                ratios: dict, notes: dict, ttq: dict | None) -> dict:
    """The bench.json document."""
    return {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "environment": env,
        "settings": settings,
        "measured": MEASURED,
        "variants": {v.name: variant_json(v) for v in variants},
        "ratios": ratios,
        "ratio_notes": notes,
        "time_to_quality": ttq,
    }


# ---- printed -----------------------------------------------------------------------------------

def print_table(variants: list[Variant]) -> None:
    head = (f"{'variant':34} {'model':24} {'batch':>6} {'steps/s':>9} {'range':>17} "
            f"{'samples/s':>11} {'ms/step':>8} {'compile s':>9} {'saved KiB':>10} {'state KiB':>10}")
    print(head)
    print("-" * len(head))
    for v in variants:
        if v.error:
            print(f"{v.name:34} {v.model_desc:24} {v.batch:>6} FAILED: {v.error}")
            continue
        s = v.steps_per_s
        med = v.median_steps_per_s
        print(f"{v.name:34} {v.model_desc:24} {v.batch:>6} {med:9.1f} "
              f"{f'{min(s):.1f}..{max(s):.1f}':>17} {med * v.batch:11.0f} {1e3 / med:8.2f} "
              f"{fmt(v.compile_s, '.1f'):>9} {v.memory.get('saved_bytes', 0) / 1024:10.1f} "
              f"{v.memory.get('state_bytes', 0) / 1024:10.1f}")


def print_sweep(by_name: dict[str, Variant], sweep: list[dict]) -> None:
    """Samples/s of the sweep (c): one row per batch size, one column per variant."""
    kinds = list(dict.fromkeys(s["kind"] for s in sweep))
    print(f"\nsweep (c), samples/s\n{'batch':>6} " + " ".join(f"{k:>24}" for k in kinds))
    for batch in sorted({s["batch"] for s in sweep}):
        cells = []
        for k in kinds:
            v = by_name.get(next((s["variant"] for s in sweep
                                  if s["batch"] == batch and s["kind"] == k), ""))
            ok = v is not None and v.round_seconds
            cells.append(f"{v.median_steps_per_s * batch:24.0f}" if ok else f"{'failed':>24}")
        print(f"{batch:>6} " + " ".join(cells))


def print_time_to_quality(ttq: dict) -> None:
    print(f"\ntime to quality (nfe1/w2_ratio < {ttq['threshold']}): step {ttq.get('step')}, "
          f"train {fmt(ttq.get('train_seconds'), '.1f')} s, "
          f"wall {fmt(ttq.get('wall_seconds'), '.1f')} s"
          + (f" - FAILED: {ttq['error']}" if "error" in ttq else ""))


def print_ratios(ratios: dict, notes: dict) -> None:
    print("\nratios")
    for key, value in ratios.items():
        print(f"  {key:58} {fmt(value, '.3f') if value is not None else 'n/a (' + notes[key] + ')'}")
