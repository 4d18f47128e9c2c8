"""The training device: one rule for every command (``device=auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import os
import re
import time

import torch

from imf_exp.errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def select_device(name: str = "auto", key: str = "device") -> torch.device:
    """``auto`` is CUDA when available, else the CPU. Raises :class:`ConfigError` naming ``key``
    for a malformed name or a CUDA device this machine does not have."""
    name = str(name)
    if not _DEVICE.match(name):
        raise ConfigError(f"{key}={name!r} is not allowed: one of 'auto', 'cpu', 'cuda', 'cuda:N'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={name!r} is not allowed here: CUDA is not available "
                              "(use auto or cpu)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{key}={name!r} is not allowed here: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_times() -> tuple[float, float] | None:
    """``(idle, total)`` jiffies of all CPUs from ``/proc/stat`` (None where there is none)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[3] + (fields[4] if len(fields) > 4 else 0.0)), sum(fields[:8])


def busy_cpus(window: float = 0.25) -> float:
    """How many CPUs other work keeps busy now: the non-idle share of the machine's CPU time over
    ``window`` seconds (``/proc/stat``) times the CPU count; else the one-minute load average.
    A current measure, so a run started right after another is not mistaken for a busy machine
    (the load average lags by about a minute)."""
    first = _cpu_times()
    if first is not None:
        time.sleep(window)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            share = 1.0 - (second[0] - first[0]) / (second[1] - first[1])
            return max(0.0, share) * (os.cpu_count() or 1)
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def cpu_threads(requested: int | None) -> int:
    """Torch CPU threads for a run: ``requested``; else ``OMP_NUM_THREADS`` when it is set; else
    the CPUs this process may use minus those other work keeps busy (:func:`busy_cpus`), at least
    one (on a shared 2-core machine, one thread beats two: measured 40.3 against 19.6 steps/s
    beside a busy process)."""
    if requested:
        return int(requested)
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, int(cpus - busy_cpus() + 0.5)))
