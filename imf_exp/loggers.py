"""Experiment loggers behind one small interface (config group ``logger``).

``WandbLogger`` never stops training: if W&B cannot start or log (no network in online mode, a
bad key, a full disk), it says so once in the log, goes on without it, and every local artifact
is still written. Its folder is the run folder's ``wandb/``.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imf_exp.errors import check

log = logging.getLogger(__name__)
WANDB_MODES = ("auto", "online", "offline", "disabled")


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


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def hydra_context() -> dict[str, Any]:
    """Sweep folder, job number and config-group choices of the current Hydra job, if any."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return {}
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v}
    multirun = hc.mode == RunMode.MULTIRUN
    return {"multirun": multirun, "sweep_dir": str(Path(hc.sweep.dir).resolve()) if multirun else None,
            "job_num": hc.job.num if multirun else None, "choices": choices,
            "overrides": list(hc.overrides.task)}


class WandbLogger(Logger):
    """Weights & Biases. ``mode=auto`` is ``online`` when logged in, else ``offline`` (no network
    call at all; ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads later).

    Multirun jobs of one sweep share ``group`` (default: the sweep folder's name); every config
    group choice becomes a tag ``group:option`` and a ``choices`` config field.
    """

    def __init__(self, project: str = "imf-exp", entity: str | None = None, mode: str = "auto",
                 group: str | None = None, tags: Sequence[str] = (), job_type: str = "train",
                 name: str | None = None, log_images: bool = True) -> None:
        check(mode in WANDB_MODES, "logger.mode", mode, f"one of {list(WANDB_MODES)}")
        self.project, self.entity, self.mode, self.group = project, entity, mode, group
        self.tags, self.job_type, self.name, self.images = list(tags), job_type, name, log_images
        self.run = None
        self.run_dir: Path | None = None

    def _warn(self, what: str, err: Exception) -> None:
        log.warning("W&B %s failed (%s: %s); training goes on, local files are unaffected",
                    what, type(err).__name__, err)

    def start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        mode = self.mode
        if mode == "auto":
            mode = "online" if wandb_logged_in() else "offline"
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"  # no network call at all, exit included
        elif mode == "disabled":
            return
        ctx = hydra_context()
        sweep = Path(ctx["sweep_dir"]) if ctx.get("sweep_dir") else None
        group = self.group or (f"{sweep.parent.name}_{sweep.name}" if sweep else None)
        tags = self.tags + [f"{k}:{v}" for k, v in ctx.get("choices", {}).items()]
        cfg = {**config, "choices": ctx.get("choices", {}), "overrides": ctx.get("overrides", []),
               "run_dir": str(self.run_dir.resolve())}
        try:
            import wandb

            self.run = wandb.init(project=self.project, entity=self.entity, mode=mode, group=group,
                                  tags=tags[:64], job_type=self.job_type, name=self.name,
                                  dir=str(self.run_dir), config=cfg, reinit="finish_previous")
            log.info("W&B %s run %s in %s", mode, self.run.id, self.run_dir / "wandb")
        except Exception as err:  # noqa: BLE001 - W&B must never stop training
            self._warn("start", err)
            log.warning("W&B: to keep a local W&B record instead, run with logger.mode=offline and "
                        "upload later with `wandb sync %s/wandb/offline-run-*`", self.run_dir)
            self.run = None

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(dict(values), step=step)
        except Exception as err:  # noqa: BLE001
            self._warn("logging", err)
            self.run = None

    def log_images(self, images: Mapping[str, Path], step: int) -> None:
        if self.run is None or not self.images:
            return
        try:
            import wandb

            self.run.log({f"figures/{k}": wandb.Image(str(p)) for k, p in images.items()}, step=step)
        except Exception as err:  # noqa: BLE001
            self._warn("image logging", err)

    def finish(self, summary: Mapping[str, Any], failed: bool = False) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            for key, value in summary.items():
                if isinstance(value, Mapping):
                    for k, v in value.items():
                        run.summary[f"{key}/{k}"] = v
                else:
                    run.summary[key] = value
            offline = run.settings.mode == "offline"
            path = run.dir
            run.finish(exit_code=1 if failed else 0)
            if offline:
                log.info("W&B run saved offline; upload it later with: wandb sync %s", Path(path).parent)
        except Exception as err:  # noqa: BLE001
            self._warn("finish", err)
