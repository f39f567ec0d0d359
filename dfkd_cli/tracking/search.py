"""What a `dfkd distill` job returns to a Hydra sweeper (hydra/sweeper=optuna, the `[optuna]`
extra): the metrics.csv column `objective=` names, averaged over a population's members.

The default, fidelity_rmse_prior, is data-free: the student-teacher RMSE on fresh N(0, I) draws,
so a search needs no labelled rows. With a dataset, val_rmse (the student's RMSE on the real
validation rows) or any other score column can be the objective instead; the sweeper minimises
unless told `hydra.sweeper.direction=maximize` (for student_r2). With selection=both the rows of
the first selection (last) count. A job whose members are not all ok (diverged, interrupted)
returns NaN and a job that failed returns None; Optuna records either as a failed trial.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from dfkd_cli.errors import UserError
from dfkd_cli.loop.selection import selections

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


def objective(cfg, frame: pd.DataFrame) -> float:
    """The job's objective: see the module docstring."""
    rows = frame[frame.selection == selections(cfg.selection)[0]]
    if cfg.objective not in rows.columns:
        raise UserError(f"objective={cfg.objective} is not a column of this run's metrics.csv; "
                        f"its columns: {', '.join(rows.columns)}")
    if (rows.status != "ok").any():
        return float("nan")
    return float(rows[cfg.objective].mean())


def returning_objective(run: Callable) -> Callable:
    """`run(cfg, run_dir) -> metrics frame` as a task that returns the objective instead."""

    def task(cfg, run_dir) -> float:
        return objective(cfg, run(cfg, run_dir))

    task.__doc__ = run.__doc__
    return task
