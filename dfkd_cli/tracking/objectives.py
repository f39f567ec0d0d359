"""What `objective=` may name: a metrics.csv column a `dfkd distill` job returns to a Hydra
sweeper (tracking/search.py), and whether it needs real rows. Plain names only, so the schemas
(config.py) can check the key before any work."""

from __future__ import annotations

from dfkd_cli.errors import UserError

# data-free: the student-teacher RMSE on fresh N(0, I) draws (fidelity_rmse_prior, its name in
# metrics files written before it was renamed)
DATA_FREE = ("fidelity_rmse_gaussian", "fidelity_rmse_prior")
# Need real rows (a dataset): on the test rows except val_rmse. A multi-output run also has
# <column>_<target> for each.
WITH_ROWS = ("val_rmse", "student_rmse", "student_r2", "student_rmse_original", "fidelity_rmse",
             "teacher_rmse")
OBJECTIVES = DATA_FREE + WITH_ROWS


def base(objective: str) -> str | None:
    """The metrics column `objective` names (itself, or the column of `<column>_<target>`)."""
    return next((name for name in OBJECTIVES
                 if objective == name or objective.startswith(f"{name}_")), None)


def check(objective: str, has_rows: bool) -> None:
    """Refuse an objective that is no metrics column, or that needs rows a run will not have,
    before any work."""
    column = base(objective)
    if column is None:
        raise UserError(f"objective={objective!r} is not valid: expected one of {OBJECTIVES} "
                        "(or <column>_<target> for one output of several)")
    if column in WITH_ROWS and not has_rows:
        raise UserError(f"objective={objective} is scored on real rows, and dataset=none "
                        f"has none; use objective={DATA_FREE[0]}")


def check_outputs(objective: str, targets: list[str]) -> None:
    """Refuse `<column>_<target>` for a target the run does not have, before training (it
    exists only for several outputs: metrics.columns)."""
    if objective in OBJECTIVES:
        return
    column = base(objective)
    target = objective[len(column) + 1:]
    if len(targets) < 2 or target not in targets:
        valid = [f"{column}_{t}" for t in targets] if len(targets) > 1 else []
        raise UserError(f"objective={objective} is not valid: this run has "
                        f"{'outputs ' + str(targets) if len(targets) > 1 else 'one output'}; "
                        f"expected {column}{' or one of ' + str(valid) if valid else ''}")
