"""What the student loop depends on, as small frozen records: built once from the run's config by
the command (commands/records.py), so a signature says what a function needs and a test builds a
record, not a whole config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfkd_cli.loop.selection import selections

STOPS = ("off", "plateau")  # stop=: run every epoch | each member stops at its plateau


@dataclass(frozen=True)
class Alpha:
    """alpha(t), the weight of the synthetic term in the student loss L_S (Zhou & Chiam 2023,
    Eq. 6): decreasing 1 - (t+1)/H (the paper's, with H = E), increasing (t+1)/H, or constant
    `value`; H is `horizon` (the run's E when None), after which alpha stays at its end."""

    schedule: str = "decreasing"
    value: float = 1.0
    horizon: int | None = None

    def horizon_for(self, epochs: int) -> int:
        """H, the epochs over which alpha moves."""
        return self.horizon or epochs

    def at(self, epoch: int, epochs: int) -> float:
        """alpha(t) for epoch t of a run of `epochs` epochs."""
        horizon = self.horizon_for(epochs)
        done = min(epoch + 1, horizon) / horizon
        if self.schedule == "decreasing":
            return 1.0 - done
        if self.schedule == "increasing":
            return done
        return float(self.value)

    def settled(self, epoch: int, epochs: int) -> bool:
        """Whether alpha has reached the end of its schedule by epoch t (a constant alpha always
        has): stop=plateau counts plateaus only from there."""
        return self.schedule == "constant" or epoch + 1 >= self.horizon_for(epochs)


@dataclass(frozen=True)
class StopRule:
    """stop=plateau (loop/stopping.py): each member stops alone once its best fidelity RMSE has
    not improved by `tolerance` (relative) for `patience` log points; off: run every epoch."""

    on: bool = False
    patience: int = 20
    tolerance: float = 0.001


@dataclass(frozen=True)
class LoopSettings:
    """E epochs of n_s steps of batch size m (Eq. 6), and what the loop logs, keeps and stops on.
    `optimizer` is the optimizer config (nets/optim.py make_optimizer); `selection` names the
    weights the run reports (loop/selection.py); `label` names the progress bar and lines."""

    epochs: int
    steps_per_epoch: int
    batch_size: int
    alpha: Alpha
    optimizer: Any
    selection: str = "last"
    log_every: int = 10
    checkpoint_every: int = 0
    on_nonfinite: str = "stop"
    stop: StopRule = StopRule()
    progress: bool = False  # a tqdm bar (where stderr is a terminal)
    progress_every: float = 30.0  # seconds between progress lines in the log (0: none)
    label: str = "student"

    @property
    def selections(self) -> list[str]:
        return selections(self.selection)
