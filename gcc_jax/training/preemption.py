"""Stopping a run cleanly on SIGTERM / SIGINT: the step where every process saves and stops.

Schedulers stop a job with SIGTERM (spot / preemptible VMs, Cloud TPU maintenance, SLURM's
time limit, ``kill``), a person with Ctrl-C (SIGINT). On the first signal the training loop
finishes its step, saves a checkpoint of it and ends with :class:`TrainingStopped`; a second
signal ends the process at once (status ``128 + signal``), leaving the checkpoints already on
disk as they are.

One process: the signal handlers installed by :class:`StopRequests` note the request, and the
loop stops after the step it is in. Several processes (``jax.distributed``): JAX's preemption
service catches SIGTERM on whichever host receives it, tells the others, and agrees with them
on the step all of them stop after (``multihost_utils.reached_preemption_sync_point``, the
mechanism orbax's ``CheckpointManager.reached_preemption`` reads too); every process then
takes part in the save. SIGINT is handed to that service as a SIGTERM of its own process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

__all__ = ["STOPPED_STATUS", "StopRequests", "TrainingStopped"]

# Exit status of a run stopped by a signal with its checkpoint saved: EX_TEMPFAIL of sysexits.h,
# "try again later", which is what the user (or a requeueing job script) should do.
STOPPED_STATUS = 75


class TrainingStopped(Exception):
    """The run stopped on a signal after saving a checkpoint of ``step``.

    Attributes:
      step: the last finished (and saved) optimizer step.
    """

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}; checkpoint saved; run the same command to resume")
        self.step = step


class StopRequests:
    """Watches for SIGTERM / SIGINT while training; a context manager.

    Inside the ``with`` block the first signal asks the loop to stop (:meth:`reached`), the
    second ends the process at once. On leaving, the previous handlers come back. Outside the
    main thread (where Python cannot install handlers) nothing is installed and only JAX's
    multi-process service can stop the run.
    """

    def __init__(self):
        self._multi_process = jax.process_count() > 1
        self._signalled = False  # a signal reached our handler (the next one stops at once)
        self._requested = False  # the loop stops after the step it is in
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is not threading.main_thread():
            return self
        # With several processes JAX's preemption service owns SIGTERM (a C handler installed
        # by jax.distributed.initialize); replacing it would keep the other hosts uninformed.
        signals = (signal.SIGINT,) if self._multi_process else (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame) -> None:
        if self._signalled:
            print(f"{signal.Signals(signum).name} again: stopped at once", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self._signalled = True
        print(
            f"{signal.Signals(signum).name} received: finishing the current step and saving a checkpoint "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        if self._multi_process:
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption service, which tells the other hosts
        else:
            self._requested = True

    def start(self, step: int) -> None:
        """Tells JAX's service (several processes) the step the loop starts after: a notice that
        arrives before the first :meth:`reached` then agrees on a step the loop will reach."""
        if self._multi_process and self._sync_point(step):
            self._requested = True  # agreed on the start itself: stop after the first step

    def reached(self, step: int) -> bool:
        """Whether the run stops after ``step`` (call after every step, on every process).

        With several processes the answer is JAX's: true on every process at the same step
        once any of them received SIGTERM (or SIGINT). From then on a second signal ends the
        process at once.
        """
        if not self._multi_process or self._requested:
            return self._requested
        if not self._sync_point(step):
            return False
        self._requested = True
        return True

    def _sync_point(self, step: int) -> bool:
        try:
            reached = multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # the service is off (jax_enable_preemption_service=False)
            return False
        if reached and threading.current_thread() is threading.main_thread():
            # The service has done its part: SIGTERM is ours again, for the "second signal".
            self._signalled = True
            self._previous.setdefault(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, self._on_signal)
        return reached
