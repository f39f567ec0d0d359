"""What a `dfkd distill` job returns to a Hydra sweeper (hydra/sweeper=optuna, the `[optuna]`
extra): the metrics.csv column `objective=` names, averaged over a population's members.

The default, fidelity_rmse_prior, is data-free: the student-teacher RMSE on fresh N(0, I) draws,
so a search needs no labelled rows. With a dataset, val_rmse (the student's RMSE on the real
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

DATA_FREE = ("fidelity_rmse_prior",)
# Need real rows (a dataset): on the test rows except val_rmse. A multi-output run also has
# <column>_<target> for each.
WITH_ROWS = ("val_rmse", "student_rmse", "student_r2", "student_rmse_original", "fidelity_rmse",
             "teacher_rmse")
OBJECTIVES = DATA_FREE + WITH_ROWS


def check(cfg) -> None:
    """Refuse an objective that is no metrics column, or that needs rows a run will not have,
    before any work."""
    base = next((name for name in OBJECTIVES
                 if cfg.objective == name or cfg.objective.startswith(f"{name}_")), None)
    if base is None:
        raise UserError(f"objective={cfg.objective!r} is not valid: expected one of {OBJECTIVES} "
                        "(or <column>_<target> for one output of several)")
    if base in WITH_ROWS and cfg.dataset.source == "none":
        raise UserError(f"objective={cfg.objective} is scored on real rows, and dataset=none "
                        f"has none; use objective={DATA_FREE[0]}")


def check_outputs(cfg, targets: list[str]) -> None:
    """Refuse `<column>_<target>` for a target the run does not have, before training (it
    exists only for several outputs: metrics.columns)."""
    if cfg.objective in OBJECTIVES:
        return
    base = next(name for name in OBJECTIVES if cfg.objective.startswith(f"{name}_"))
    target = cfg.objective[len(base) + 1:]
    if len(targets) < 2 or target not in targets:
        valid = [f"{base}_{t}" for t in targets] if len(targets) > 1 else []
        raise UserError(f"objective={cfg.objective} is not valid: this run has "
                        f"{'outputs ' + str(targets) if len(targets) > 1 else 'one output'}; "
                        f"expected {base}{' or one of ' + str(valid) if valid else ''}")


def objective(cfg, frame: pd.DataFrame) -> float | None:
    """The job's objective: see the module docstring."""
    rows = frame[frame.selection == selections(cfg.selection)[0]]
    if cfg.objective not in rows.columns:
        raise UserError(f"objective={cfg.objective} is not a column of this run's metrics.csv; "
                        f"its columns: {', '.join(rows.columns)}")
    if (rows.status != "ok").any():
        return None  # not NaN: the plugin's failed-trial path tells Optuna NaN twice and crashes
    return float(rows[cfg.objective].mean())


def returning_objective(run: Callable) -> Callable:
    """`run(cfg, run_dir) -> metrics frame` as a task that returns the objective instead."""

    def task(cfg, run_dir) -> float:
        return objective(cfg, run(cfg, run_dir))

    task.__doc__ = run.__doc__
    return task


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
