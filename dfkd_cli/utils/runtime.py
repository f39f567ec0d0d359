"""Run-time set-up shared by the commands: device choice, seeding, threads, signals."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import sys
import threading
from typing import Any

import numpy as np
import torch

from dfkd_cli.errors import UserError


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda when available, else cpu; an explicit cuda without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"device={spec} but no CUDA GPU is available; use device=cpu or "
                            "device=auto")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device={spec} but only {torch.cuda.device_count()} GPU(s) exist")
        return torch.device(spec)
    raise UserError(f"device={spec!r} is not valid: expected auto, cpu, cuda or cuda:N")


def set_threads(threads: int | None) -> None:
    """torch's CPU threads. dfkd's steps are tiny, so one thread is fastest and stays fast when
    several jobs share the cores; with more threads than free cores, OpenMP's spinning threads
    can make a step 100x slower."""
    if threads is not None:
        torch.set_num_threads(threads)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next tensor instead of returning it to the
    kernel. By default a block over 128 KiB (a (3, 100, 500) float activation is 600 KiB) is
    mapped fresh and unmapped again when freed, so every large tensor of every step pays a page
    fault per 4 KiB page (docs/performance.md measures the cost). Serving blocks up to 32 MiB
    from the heap and trimming the heap only when 256 MiB lie free keeps a step's memory warm.
    Returns False (and changes nothing) where the C library has no mallopt (macOS, Windows)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# set by `dfkd` in the process that launches the jobs (cli.main); a job running in a worker
# process that this launcher started (hydra/launcher=joblib) watches it
LAUNCHER_PID = "DFKD_LAUNCHER_PID"
PARENT_POLL_S = 0.5


def mark_launcher() -> None:
    """Record this process as the one launching dfkd's jobs (inherited by its workers)."""
    os.environ[LAUNCHER_PID] = str(os.getpid())


def launcher_parent() -> int | None:
    """The launcher's pid when this process is a worker it started directly (a joblib / loky
    worker running a job of a sweep), else None (the launcher itself, a job run elsewhere)."""
    launcher = os.environ.get(LAUNCHER_PID, "")
    if not launcher.isdigit() or int(launcher) == os.getpid():
        return None
    return int(launcher) if os.getppid() == int(launcher) else None


def exit_if_orphaned(launcher: int | None) -> None:
    """In a worker whose launcher (`launcher`, from launcher_parent at the job's start) has gone:
    end the process once its job has written its files, rather than wait idle as an orphan for
    jobs that will never come (exit code 128 + SIGTERM, as the launcher's)."""
    if launcher is None or os.getppid() == launcher:
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signal.SIGTERM)


class Interrupts:
    """Turns SIGINT / SIGTERM into a flag the training loop checks between epochs, so Ctrl-C or a
    cluster's pre-emption ends the run at a clean point where its state can be saved.

    In a worker of a sweep's launcher (hydra/launcher=joblib) the launcher's death counts as a
    SIGTERM too: `kill -TERM <launcher>` ends the launcher at once, and its workers, which the
    signal never reaches, would train on as orphans; instead each notices (its parent changes,
    checked every PARENT_POLL_S) and stops as interrupted, checkpointed for resume=true."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._done = threading.Event()

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        launcher = launcher_parent()
        if launcher is not None:
            threading.Thread(target=self._watch, args=(launcher,), daemon=True,
                             name="dfkd-launcher-watch").start()
        return self

    def _watch(self, launcher: int) -> None:
        while not self._done.wait(PARENT_POLL_S):
            if os.getppid() != launcher:
                if self.received is None:
                    self.received = signal.SIGTERM
                return

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or 0)
