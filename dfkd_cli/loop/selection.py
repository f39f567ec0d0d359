"""`selection=`: which weights of a training a run reports (last, the best on the validation rows,
the best on the fixed synthetic set), and the history.csv column that scores each."""

from __future__ import annotations

# selection= -> the weights a run reports, one metrics row each, from one training
SELECTIONS = {"last": ["last"], "val": ["val"], "fidelity": ["fidelity"],
              "both": ["last", "val"], "all": ["last", "fidelity", "val"]}
SCORE_COLUMNS = {"val": "val_rmse", "fidelity": "synthetic_fidelity_rmse"}  # history.csv


def selections(selection: str) -> list[str]:
    """The weights a run reports, `last` first: selection=both is one training with two rows,
    last then val, and `all` adds fidelity (the trajectory is the same; only which weights are
    kept differs)."""
    return SELECTIONS[selection]
