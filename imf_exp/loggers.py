"""Experiment loggers behind one small interface (config group ``logger``).

``WandbLogger`` never stops training: if W&B cannot start or log (no network in online mode, a
bad key, a full disk), it says so once in the log, goes on without it, and every local artifact
is still written. Its folder is the run folder's ``wandb/``.
"""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imf_exp.config import WandbLoggerConfig, WandbMode, default
from imf_exp.errors import check

log = logging.getLogger(__name__)
WANDB_MODES = tuple(m.value for m in WandbMode)


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


@contextlib.contextmanager
def _cache_in(folder: Path):
    """W&B's service writes its debug logs under the user's cache folder ($XDG_CACHE_HOME); it
    is started by ``wandb.init`` with this environment, so they land in the run folder."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder.resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of a sweep's jobs: ``DATE_TIME`` of the sweep folder ``.../DATE/TIME``."""
    sweep_dir = Path(sweep_dir).resolve()
    return f"{sweep_dir.parent.name}_{sweep_dir.name}"


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

    def __init__(self, project: str = default(WandbLoggerConfig, "project"),
                 entity: str | None = None, mode: str = default(WandbLoggerConfig, "mode"),
                 group: str | None = None, tags: Sequence[str] = (),
                 job_type: str = default(WandbLoggerConfig, "job_type"), name: str | None = None,
                 log_images: bool = default(WandbLoggerConfig, "log_images")) -> None:
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
        group = self.group or (sweep_group(ctx["sweep_dir"]) if ctx.get("sweep_dir") else None)
        tags = self.tags + [f"{k}:{v}" for k, v in ctx.get("choices", {}).items()]
        cfg = {**config, "choices": ctx.get("choices", {}), "overrides": ctx.get("overrides", []),
               "run_dir": str(self.run_dir.resolve())}
        try:
            import wandb

            with _cache_in(self.run_dir / "wandb" / "cache"):
                self.run = wandb.init(project=self.project, entity=self.entity, mode=mode,
                                      group=group, tags=tags[:64], job_type=self.job_type,
                                      name=self.name, dir=str(self.run_dir), config=cfg,
                                      reinit="finish_previous")
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
            import wandb

            wandb.teardown()  # the next run (a sweep's next job) starts its own service
            if offline:
                log.info("W&B run saved offline; upload it later with: wandb sync %s", Path(path).parent)
        except Exception as err:  # noqa: BLE001
            self._warn("finish", err)
