"""Progress that is seen wherever the output goes: a tqdm bar while stderr is a terminal, and a
log line every `every` seconds of wall time (`progress_every=`), so that a long run under
nohup, SLURM, Ray or CI can be told from a stuck one by its log:

    bounded: epoch 1200/8000, 5/5 members training, fidelity RMSE 0.0412, elapsed 1m30s,
    ETA 8m30s

The ETA assumes the epochs to come cost what the epochs so far did; where a run may stop
before its cap (early stopping), it is the time to the cap, said as "at most"."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from tqdm import tqdm

log = logging.getLogger("dfkd")


def duration(seconds: float) -> str:
    """2h05m, 4m10s, 12s."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Epochs `start`..`total` of `what`. `update(done, figures)` after each epoch moves the bar
    and, once `every` seconds have passed since the last line (or the start), logs a line with
    `figures()` (computed only then: it may read values back from the device). `every` 0: no
    lines. `bar`: show the bar (when stderr is a terminal). `early_stop`: the run may end
    before `total`."""

    def __init__(self, what: str, total: int, every: float, bar: bool = True, start: int = 0,
                 early_stop: bool = False, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.every, self.start = what, total, every, start
        self.early_stop, self.clock = early_stop, clock
        self.started = self.last = clock()
        self.bar = tqdm(total=total, initial=start, desc=what, leave=False, dynamic_ncols=True,
                        disable=not (bar and sys.stderr.isatty()))

    def update(self, done: int, figures: Callable[[], str] | None = None) -> None:
        self.bar.update(done - self.bar.n)
        now = self.clock()
        if self.every > 0 and now - self.last >= self.every:
            self.last = now
            log.info(self.line(done, figures() if figures else "", now))

    def line(self, done: int, figures: str, now: float) -> str:
        elapsed = now - self.started
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else None
        eta = ("unknown" if left is None else
               f"{'at most ' if self.early_stop else ''}{duration(left)}")
        return (f"{self.what}: epoch {done}/{self.total}{f', {figures}' if figures else ''}, "
                f"elapsed {duration(elapsed)}, ETA {eta}")

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
