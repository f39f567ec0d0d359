"""The run directory's tables: metrics.csv (one row) and history.csv (one row per logged epoch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dfkd_cli.utils.files import write_csv

METRICS = "metrics.csv"
HISTORY = "history.csv"


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
