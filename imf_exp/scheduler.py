"""What a job needs to know of the scheduler that runs it: SLURM, through submitit.

A scheduler warns a job before it stops it. submitit asks SLURM for its signal
(``SUBMITIT_PREEMPT_SIGNAL``, default ``USR2``) ``signal_delay_s`` before the time limit (and
before a pre-emption with a grace time) and handles it by requeueing the job; ``scontrol
requeue`` and a pre-emption without grace time send SIGTERM (then SIGKILL after ``KillWait``).
The run catches every one of them (:func:`stop_signals`), writes a checkpoint at the step it is
at, and then :func:`hand_over` lets the scheduler carry on: the requeued job resumes from the
checkpoint in its folder and the sweep's driver receives the final result of the last attempt.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess

log = logging.getLogger(__name__)


def submitit_signal() -> signal.Signals | None:
    """The signal submitit uses to warn of a time limit or pre-emption, when this process is a
    submitit job (read from submitit, which reads ``SUBMITIT_PREEMPT_SIGNAL``); else None."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    try:
        from submitit import JobEnvironment

        return getattr(signal, "SIG" + str(JobEnvironment.USR_SIG).upper().removeprefix("SIG"))
    except (ImportError, AttributeError):
        return signal.SIGUSR2


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals after which a run checkpoints and stops: SIGTERM, SIGUSR1, SIGUSR2 and the one
    submitit is configured to use."""
    signals = [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, submitit_signal()]
    return tuple(dict.fromkeys(s for s in signals if s is not None))


def being_requeued() -> bool:
    """Whether SLURM is requeueing this job (``scontrol requeue``, a pre-emption): its restart
    count is already ahead of the one this attempt started with."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    match = re.search(r"\bRestarts=(\d+)", out)
    return bool(match) and int(match.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def hand_over(signum: int) -> None:
    """After the checkpoint for ``signum`` was written, let the scheduler carry on.

    * submitit's own signal: its handler requeues the job (counting time-outs against
      ``max_num_timeout``) and exits without a result, so the driver waits for the next attempt;
    * SIGTERM of a job SLURM is requeueing: the process ends by the signal, without a result;
    * a submitit job stopped for good (``scancel``, the hard time limit): returns, so the caller
      raises and the driver receives a failed job instead of waiting for a result forever;
    * not a submitit job: the previous handler (by default the signal ends the process).
    """
    own = submitit_signal()
    if own is not None and signum == own:
        signal.raise_signal(signum)
        return
    if os.environ.get("SLURM_JOB_ID") and being_requeued():
        log.warning("SLURM is requeueing this job: exiting; the next attempt resumes from the checkpoint")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    if own is None:
        signal.raise_signal(signum)


class QuietSacct(logging.Filter):
    """submitit polls ``sacct`` for job states; on a cluster without accounting every poll fails
    with a warning. Shows the first, then a single line saying the rest are left out."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        self.seen += 1
        if self.seen == 2:
            record.msg, record.args = ("sacct keeps failing (no SLURM accounting?): job states come "
                                       "from the jobs' result files; further such warnings are left out"), ()
            return True
        return self.seen == 1


def quiet_submitit() -> None:
    """Install :class:`QuietSacct` on submitit's logger (once)."""
    logger = logging.getLogger("submitit")
    if not any(isinstance(f, QuietSacct) for f in logger.filters):
        logger.addFilter(QuietSacct())
