"""SIGINT (Ctrl-C) and SIGTERM as a request to stop at the next step boundary, for ``ablate train``.

The trainer already stops cleanly when its ``should_stop`` callable turns true: every rank finishes the
current optimizer step, a checkpoint of that step is written, the status becomes "interrupted" and the same
command resumes exactly (the path a sweep job takes on SLURM's pre-timeout signal, sweeps/job.py).
:func:`stop_on_signals` only feeds that mechanism from SIGINT and SIGTERM:

* the first signal sets the flag and says so on stderr (one line);
* a second SIGINT aborts at once (``KeyboardInterrupt``; the run resumes from its previous checkpoint).
  A SIGTERM after the first signal does not: torchrun answers a Ctrl-C by sending SIGTERM to its workers,
  which are then stopping already, and schedulers follow SIGTERM with SIGKILL anyway.

Sweep jobs keep submitit's own handling (SIGTERM is ignored there, USR2 checkpoints and requeues).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class StopRequest:
    """Set by the first SIGINT/SIGTERM; callable as the trainer's ``should_stop``."""

    signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_status(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal (130 for SIGINT)."""
        return 128 + (self.signum or 0)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """Within the block, the first of ``signals`` sets the yielded :class:`StopRequest` instead of ending the
    process; the previous handlers come back afterwards. Outside the main thread (where Python cannot set
    handlers) nothing is installed and the request never turns true."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame) -> None:
        if request.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        request.signum = signum
        print(
            f"ablate: {signal.Signals(signum).name} received: stopping after the current step with a "
            "checkpoint (Ctrl-C again to abort at once)",
            file=sys.stderr,
            flush=True,
        )

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
