"""What a `dfkd distill` job returns to a Hydra sweeper (hydra/sweeper=optuna, the `[optuna]`
extra): the metrics.csv column `objective=` names, averaged over a population's members.

The default, fidelity_rmse_gaussian, is data-free: the student-teacher RMSE on fresh N(0, I)
draws, so a search needs no labelled rows (tracking/objectives.py lists what may be named). With a dataset, val_rmse (the student's RMSE on the real
validation rows) or any other score column can be the objective instead; the sweeper minimises
unless told `hydra.sweeper.direction=maximize` (for student_r2). With selection=both the rows of
the first selection (last) count. A job whose members are not all ok (diverged, interrupted)
or that failed returns None; Optuna records it as a failed trial, and the search goes on
(SearchGoesOn).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dfkd_cli.errors import UserError
from dfkd_cli.loop.selection import selections
from dfkd_cli.tracking.callbacks import SWEEP_END
from dfkd_cli.utils.run_tables import current_name


def objective(name: str, selection: str, frame: pd.DataFrame) -> float | None:
    """The job's objective, the metrics column `name` over the rows of `selection`'s first
    weights: see the module docstring."""
    rows = frame[frame.selection == selections(selection)[0]]
    name = current_name(name)
    if name not in rows.columns:
        raise UserError(f"objective={name} is not a column of this run's metrics.csv; "
                        f"its columns: {', '.join(rows.columns)}")
    if (rows.status != "ok").any():
        return None  # not NaN: the plugin's failed-trial path tells Optuna NaN twice and crashes
    return float(rows[name].mean())


class SearchGoesOn(Callback):
    """The Optuna sweeper's search (configs/hparams_search/) ends with the sweep's report whatever
    its trials did. The plugin raises 'No trials are completed yet' when every trial failed or
    diverged, before the end-of-sweep callbacks run, so no report.md would list them: its `sweep`
    is wrapped, in this process only, to return instead, and the search ends with one line and
    exit 1 after the report is written (tracking/callbacks.SWEEP_END). `n_trials` below 1 is refused before any job (exit 2)."""

    def __init__(self) -> None:
        self.none_completed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        trials = config.hydra.sweeper.get("n_trials")
        if trials is not None and trials < 1:
            print(f"dfkd: error: hydra.sweeper.n_trials={trials} is not valid: expected at "
                  "least 1 trial", file=sys.stderr)
            sys.exit(2)
        from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
        OptunaSweeperImpl.sweep = self._to_the_end(getattr(OptunaSweeperImpl.sweep, "__wrapped__",
                                                           OptunaSweeperImpl.sweep))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.none_completed:  # said by `dfkd` once the sweep's report is written
            SWEEP_END["error"] = (f"no trial of the search completed: all "
                                  f"{config.hydra.sweeper.n_trials} failed or diverged (listed "
                                  f"in {config.hydra.sweep.dir}/report.md)")

    def _to_the_end(self, sweep: Callable) -> Callable:
        def wrapped(sweeper, arguments):
            try:
                return sweep(sweeper, arguments)
            except ValueError as exc:
                if "No trials are completed" not in str(exc):
                    raise
                self.none_completed = True
                return None

        wrapped.__wrapped__ = sweep
        return wrapped
