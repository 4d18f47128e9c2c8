"""The run folder: the only code that reads or writes one.

A run folder (``outputs/runs/DATE/TIME-MICROSECONDS/`` or a sweep's ``JOBNUM/``) holds::

    .hydra/config.yaml      the composed config (Hydra writes it; also inside every checkpoint)
    checkpoint.pt           the latest checkpoint; checkpoint.prev.pt the one before
    metrics.json            status, final metrics, evaluations, training history (one writer)
    samples/NAME.npz        samples, keys ``standardized`` and ``native`` (``labels`` if guided)
    eval/NAME.json          re-evaluations (``imf_exp.evaluate``): per evaluation seed, mean, std
    figures/NAME.png        figures (``imf_exp.figures``)
    train.log, wandb/       the log, the W&B run

Every file is written through a temporary file in the same folder, fsynced, then renamed, so
a kill at any moment leaves the previous version or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from imf_exp.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
DIGESTS = "checkpoint.sha256"  # SHA-256 of the last checkpoints written (newest first)
LOCK = ".lock"  # held (flock) by the process writing the folder; names it
METRICS = "metrics.json"
TEMP_FILE = re.compile(r"^\..+\.tmp\d+$")
STATE_KEYS = ("step", "model", "ema", "optimizer", "scheduler", "rng", "history", "evals", "config")
STEP_FILE = re.compile(r"^step(\d+)_(.+)\.npz$")
#: keys a resumed run may change: they do not alter the trajectory of the weights (a different
#: device type reseeds the data stream; see ``Trainer._restore``)
RESUME_MAY_CHANGE = ("resume", "device", "trainer.progress", "logger", "hydra")


class WriteError(OSError):
    """A file of the run folder could not be written (the message names it and says why)."""


def atomic_write(path: Path, write: Callable[[Any], None], keep_previous: Path | None = None,
                 before_replace: Callable[[Path], None] | None = None) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    With ``keep_previous``, the old ``path`` is moved there first (after the new file is
    complete), so a kill at any moment leaves at least one whole file behind.
    ``before_replace(tmp)`` runs on the complete, fsynced temporary file before any rename.
    On any failure the temporary file is removed; a full disk is reported as such.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, WriteError):
            raise
        if _disk_full(err):
            raise WriteError(errno.ENOSPC, f"no space left on the device of {path.parent} while "
                             f"writing {path.name} ({_free_bytes(path.parent)} bytes free); free "
                             "some space, then resume the run") from err
        if isinstance(err, OSError):
            raise WriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
        raise


def check_writable(folder: Path, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``folder`` cannot be created or written."""
    probe = Path(folder).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}={str(folder)!r} is not allowed: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={str(folder)!r} is not allowed: {probe} is not writable")


def _disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, or torch's zip writer failing on a short write ("unexpected pos")."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "No space left" in str(err))


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return -1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLocked(ConfigError):
    """Another live process holds the run folder."""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_diff(a: dict, b: dict, only: Sequence[str] | None = None) -> list[str]:
    """Dotted keys where two resolved configs differ (restricted to prefixes ``only``), except
    the keys a resumed run may change."""
    fa, fb = _flatten(a), _flatten(b)
    keys = [k for k in sorted(set(fa) | set(fb)) if only is None or _under(k, only)]
    return [f"{k} ({fa.get(k, '<absent>')!r} in the run, {fb.get(k, '<absent>')!r} now)"
            for k in keys if not _under(k, RESUME_MAY_CHANGE)
            and fa.get(k, "<absent>") != fb.get(k, "<absent>")]


@dataclass
class LoadedRun:
    """A run rebuilt from its folder: config, objects, the model with the chosen weights (in
    eval mode, on the chosen device) and the step of its checkpoint."""

    cfg: DictConfig
    parts: Any  # imf_exp.build.Parts
    model: torch.nn.Module
    step: int


class RunDir:
    """One run folder (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    # ---- the lock ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder for this process: a second process is refused with
        :class:`RunLocked` naming the holder (host, pid). The lock is an ``flock`` on ``.lock``,
        released when the process ends however it ends; a lock file left by a killed process is
        taken over (and said so). Re-entrant within a process. Once held, temporary files that
        a killed writer left behind are removed."""
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"the run folder {self.path} is in use by {self.holder() or 'another process'}; "
                            "wait for it to finish, or choose another folder") from None
        try:
            stale = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            if stale:
                log.warning("took over the lock of %s left by %s, which is not running", self.path,
                            _describe_holder(stale))
            info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                               "since": time.strftime("%Y-%m-%d %H:%M:%S")})
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            self.remove_temp_files()
            _HELD[key] = 1
            yield
        finally:
            _HELD.pop(key, None)
            os.ftruncate(fd, 0)
            os.close(fd)

    def remove_stub(self, output_subdir: str) -> None:
        """Remove what a refused start created: Hydra's ``output_subdir`` and, in a folder that
        holds nothing of a run (no checkpoint, no metrics.json), its log and the folder."""
        shutil.rmtree(self.path / output_subdir, ignore_errors=True)
        if (self.path / CHECKPOINT).exists() or (self.path / METRICS).exists():
            return
        leftovers = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        if leftovers <= {".hydra", "train.log", LOCK}:
            shutil.rmtree(self.path, ignore_errors=True)

    def holder(self) -> str | None:
        """Who holds the lock ("process PID on host HOST (since TIME)"); None when nobody does."""
        path = self.path / LOCK
        if not path.is_file():
            return None
        with open(path, "rb+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _describe_holder(path.read_text(errors="replace"))
            fcntl.flock(f, fcntl.LOCK_UN)
        return None

    def remove_temp_files(self) -> list[Path]:
        """Remove the temporary files of interrupted writes (``.NAME.tmpPID``, here and in
        ``samples/``); only safe while the folder is locked."""
        removed = []
        for folder in (self.path, self.samples):
            for path in folder.iterdir() if folder.is_dir() else []:
                if TEMP_FILE.match(path.name):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        if removed:
            log.warning("removed %d temporary file(s) left by an interrupted write: %s", len(removed),
                        ", ".join(p.name for p in removed))
        return removed

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        """Write ``state`` as ``checkpoint.pt``; the one it replaces becomes ``checkpoint.prev.pt``.
        The new file's SHA-256 is recorded in ``checkpoint.sha256`` before it replaces the old one."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / CHECKPOINT, lambda f: torch.save(state, f),
                     keep_previous=self.path / PREVIOUS, before_replace=self._record_digest)

    def _record_digest(self, tmp: Path) -> None:
        digests = [_sha256(tmp)] + (self._digests() or [])
        text = "\n".join(digests[:3]) + "\n"  # the new one, the current and the previous one
        atomic_write(self.path / DIGESTS, lambda f: f.write(text.encode()))

    def _digests(self) -> list[str] | None:
        """The recorded digests; None for a folder written before they were (not checked)."""
        try:
            return (self.path / DIGESTS).read_text().split()
        except OSError:
            return None

    def load_checkpoint(self, map_location: Any = "cpu") -> dict | None:
        """The newest checkpoint that is intact (its SHA-256 recorded) and readable, falling back
        to the previous one with a warning; None when there is none. Raises
        :class:`ConfigError` when checkpoints exist but none can be used."""
        problems, digests = [], self._digests()
        for name in (CHECKPOINT, PREVIOUS):
            path = self.path / name
            if not path.exists():
                continue
            try:
                if digests is not None and _sha256(path) not in digests:
                    raise ValueError("checksum mismatch: the file changed after it was written")
                state = torch.load(path, map_location=map_location, weights_only=False)
                missing = [k for k in STATE_KEYS if k not in state]
                if missing:
                    raise ValueError(f"missing entries {missing}")
            except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
                problems.append(f"{path}: {type(err).__name__}: {err}")
                log.warning("checkpoint %s is corrupt or truncated (%s)%s", path, err,
                            "; trying the previous one" if name == CHECKPOINT else "")
                continue
            if problems:
                log.warning("using the previous good checkpoint %s (step %d)", path, state["step"])
            state["path"] = str(path)
            return state
        if problems:
            raise ConfigError(f"no readable checkpoint in {self.path}: " + "; ".join(problems))
        return None

    # ---- metrics.json ----------------------------------------------------------------------
    @staticmethod
    def _write_json(path: Path, data: dict) -> Path:
        text = json.dumps(data, indent=2, allow_nan=True)
        atomic_write(path, lambda f: f.write(text.encode()))
        return path

    @staticmethod
    def _read_json(path: Path) -> dict | None:
        """A JSON object file's contents; None when it is missing, unreadable or not an object."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_metrics(self, status: str, **fields: Any) -> Path:
        """``metrics.json``: ``{"status": status, **fields}`` (the one writer of the file)."""
        return self._write_json(self.path / METRICS, {"status": status, **fields})

    def read_metrics(self) -> dict | None:
        """``metrics.json``'s contents; None when it is missing or unreadable."""
        return self._read_json(self.path / METRICS)

    # ---- eval/NAME.json (imf_exp.evaluate) --------------------------------------------------
    def write_eval(self, name: str, result: dict) -> Path:
        """``eval/NAME.json``: a re-evaluation of the run (never touches ``metrics.json``)."""
        (self.path / "eval").mkdir(exist_ok=True)
        return self._write_json(self.path / "eval" / f"{name}.json", result)

    def read_eval(self, name: str) -> dict | None:
        """``eval/NAME.json``'s contents; None when it is missing or unreadable."""
        return self._read_json(self.path / "eval" / f"{name}.json")

    # ---- samples ---------------------------------------------------------------------------
    def save_samples(self, name: str, standardized: torch.Tensor | np.ndarray,
                     native: torch.Tensor | np.ndarray, out: Path | None = None,
                     **extra: np.ndarray) -> Path:
        """``samples/NAME.npz`` (or ``out``) with both coordinates of the same points."""
        path = Path(out) if out is not None else self.samples / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"standardized": _numpy(standardized), "native": _numpy(native), **extra}
        atomic_write(path, lambda f: np.savez(f, **arrays))
        return path

    def load_samples(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.samples / f"{name}.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def eval_step_files(self, sampler: str | None = None) -> list[tuple[int, Path]]:
        """``(step, path)`` of ``samples/step{step:07d}_{sampler}.npz``, by increasing step.

        ``sampler`` (e.g. ``"nfe1"`` or ``"ode100"``): which sampler's files; None takes the
        first found (name order; the trainer saves only its first sampler's). Empty when none.
        """
        found: dict[str, list[tuple[int, Path]]] = {}
        for path in sorted(self.samples.glob("step*_*.npz")) if self.samples.is_dir() else []:
            match = STEP_FILE.match(path.name)
            if match:
                found.setdefault(match.group(2), []).append((int(match.group(1)), path))
        if sampler is None:
            sampler = min(found, default=None)
        return sorted(found.get(sampler, []))

    # ---- config, resume and loading ----------------------------------------------------------
    def saved_config(self) -> DictConfig | None:
        """The run's config: ``.hydra/config.yaml``, else the one inside its checkpoint."""
        if self.config_path.is_file():
            return OmegaConf.load(self.config_path)
        state = self.load_checkpoint()
        return None if state is None else OmegaConf.create(state["config"])

    def prepare(self, cfg: DictConfig, explicit: bool, override_keys: Sequence[str]
                ) -> tuple[DictConfig, dict | None]:
        """The config to run in this folder and the checkpoint to start from (None: from scratch).

        ``explicit`` (``resume=FOLDER``): continue the run with its own saved config; overrides
        on the command line (``override_keys``) that would change it are refused, those of the
        keys that may change (``RESUME_MAY_CHANGE``) are applied. Otherwise a folder that already
        holds a checkpoint (a requeued job, a fixed ``hydra.run.dir``) resumes only if its config
        is the same.
        """
        from imf_exp.build import complete_saved_config
        from imf_exp.config import to_dict

        now = to_dict(cfg)
        if explicit:
            if not self.path.is_dir():
                raise ConfigError(f"resume={str(self.path)!r}: the folder does not exist")
            state = self.load_checkpoint()
            if state is None:
                raise ConfigError(f"resume={str(self.path)!r}: no checkpoint.pt in the folder yet")
            diff = config_diff(to_dict(complete_saved_config(state["config"])), now, only=override_keys)
            if diff:
                raise ConfigError(f"resume={str(self.path)!r} uses the run's own config; these "
                                  f"overrides would change it: {'; '.join(diff)}")
            run_cfg = complete_saved_config(state["config"])
            given = [k for k in RESUME_MAY_CHANGE if k != "hydra" and
                     (k in ("device", "trainer.progress", "resume") or _under_any(k, override_keys))]
            for key in given:
                OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), force_add=True,
                                 merge=False)
            return run_cfg, state
        state = self.load_checkpoint()
        if state is None:
            return cfg, None
        diff = config_diff(to_dict(complete_saved_config(state["config"])), now)
        if diff:
            raise ConfigError(f"the run folder {self.path} already holds a checkpoint of another "
                              f"config (differs at {'; '.join(diff)}); choose a new folder, or "
                              f"resume={self.path}")
        return cfg, state

    def load(self, weights: str = "ema", device: str | torch.device = "cpu") -> LoadedRun:
        """Rebuild the run from its config and newest readable checkpoint (for ``sample`` and
        ``figures``): the EMA (``weights="ema"``) or trained (``"raw"``) weights."""
        from imf_exp.build import build, complete_saved_config
        from imf_exp.devices import select_device

        if not self.path.is_dir():
            raise ConfigError(f"run folder {str(self.path)!r} does not exist")
        device = select_device(str(device))
        if not self.config_path.is_file() and not (self.path / CHECKPOINT).is_file():
            raise ConfigError(f"{self.config_path} is missing: {self.path} is not a run folder of "
                              "imf_exp.train")
        state = self.load_checkpoint()
        if state is None:
            raise ConfigError(f"{self.path / CHECKPOINT} is missing: the run has not written a "
                              "checkpoint yet")
        cfg = complete_saved_config(state["config"])
        parts = build(cfg)
        model = parts.model
        model.load_state_dict(state["ema" if str(weights) == "ema" else "model"])
        return LoadedRun(cfg, parts, model.to(device).eval(), int(state["step"]))

    def sweep_dir(self) -> Path | None:
        """The sweep folder when this run is a job of a multirun (from ``.hydra/hydra.yaml``)."""
        path = self.path / ".hydra" / "hydra.yaml"
        if not path.is_file():
            return None
        try:
            mode = OmegaConf.select(OmegaConf.load(path), "hydra.mode")
        except Exception:  # noqa: BLE001 - an unreadable file: not known to be a sweep job
            return None
        return self.path.resolve().parent if str(mode) == "MULTIRUN" else None


_HELD: dict[str, int] = {}  # run folders this process holds the lock of


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"process {info['pid']} on host {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def _under_any(key: str, override_keys: Sequence[str]) -> bool:
    return any(k == key or k.startswith(key + ".") for k in override_keys)


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
