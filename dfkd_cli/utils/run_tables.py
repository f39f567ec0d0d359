"""The run directory's tables: metrics.csv (one row) and history.csv (one row per logged epoch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dfkd_cli.utils.files import write_csv

METRICS = "metrics.csv"
HISTORY = "history.csv"
# metrics columns under the names of files written before they were renamed -> today's
# (fidelity_rmse_gaussian is measured on N(0, I) draws, not on the run's prior)
RENAMED = {"fidelity_rmse_prior": "fidelity_rmse_gaussian"}


def current_name(column: str) -> str:
    """Today's name of a metrics column (`<old>_<target>` too)."""
    for old, new in RENAMED.items():
        if column == old or column.startswith(f"{old}_"):
            return new + column[len(old):]
    return column


def with_current_names(frame: pd.DataFrame) -> pd.DataFrame:
    """A metrics table read from a file, its renamed columns under today's names."""
    names = {c: current_name(c) for c in frame.columns}
    return frame.rename(columns={c: n for c, n in names.items()
                                 if n != c and n not in frame.columns})


def write_metrics(run_dir: Path, rows: dict[str, Any] | list[dict[str, Any]]) -> pd.DataFrame:
    """metrics.csv: one row (a row per selection for selection=both)."""
    frame = pd.DataFrame([rows] if isinstance(rows, dict) else rows)
    write_csv(frame, Path(run_dir) / METRICS)
    return frame


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(pd.DataFrame(rows), Path(run_dir) / HISTORY)


def show(frame: pd.DataFrame, columns: list[str]) -> str:
    """The columns a person reads first, as a plain text table."""
    present = [c for c in columns if c in frame.columns]
    return frame[present].to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")
