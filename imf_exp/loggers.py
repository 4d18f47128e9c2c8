"""Experiment loggers behind one small interface (config group ``logger``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


class Logger:
    """Interface. ``start`` gets the run folder and the resolved config as a plain dict."""

    def start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        pass

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        pass

    def log_images(self, images: Mapping[str, Path], step: int) -> None:
        pass

    def finish(self, summary: Mapping[str, Any], failed: bool = False) -> None:
        pass


class NoLogger(Logger):
    """Logs nothing beyond the run folder's own files."""
