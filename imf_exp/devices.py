"""The training device: one rule for every command (``device=auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import os
import re

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


def cpu_threads(requested: int | None) -> int:
    """Torch CPU threads for a run: ``requested``; else ``OMP_NUM_THREADS`` when it is set; else
    the CPUs this process may use minus those the machine's one-minute load average says are busy,
    at least one (on a shared 2-core machine, one thread beats two: measured 40.3 against 19.6
    steps/s beside a busy process)."""
    if requested:
        return int(requested)
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus, int(cpus - busy + 0.5)))
