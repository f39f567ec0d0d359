"""What a run directory may hold before a command writes into it.

A run directory is dfkd's own: the files a run writes there are never symbolic links, and a
finished run (or an interrupted one, with its resumable checkpoint.pt) is never replaced without
a word. A rerun into such a directory is refused with one line unless `overwrite=true` (start
over, replacing it) or `resume=true` (continue it; a finished run is left as it is). A refused
job writes nothing into the directory: its files stay the other run's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dfkd_cli.errors import UserError
from dfkd_cli.utils.run_tables import METRICS

CHECKPOINT = "checkpoint.pt"  # the resumable state of an interrupted distill run
# metrics.csv statuses of a run that ran to its end (train-teacher's `exists`: it found its
# teacher in the store)
FINISHED = ("ok", "diverged", "unstable", "exists")
MAX_ENTRIES = 100_000  # entries looked at under a run or sweep directory before giving up
METRICS_BYTES = 1 << 20  # a metrics.csv dfkd writes is a few kB


class RunDirTaken(UserError):
    """The run directory holds another run's files (finished, interrupted, or not dfkd's): the
    command is refused and writes nothing there."""


def status(member_dir: Path) -> str | None:
    """The status in <member_dir>/metrics.csv; None without one; 'unreadable' for a file that
    is not a small dfkd metrics table (a symlink, a huge or binary file, no status column)."""
    path = Path(member_dir) / METRICS
    if not os.path.lexists(path):
        return None
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > METRICS_BYTES:
            return "unreadable"
        value = pd.read_csv(path, usecols=["status"], nrows=1).status.iloc[0]
    except Exception:  # noqa: BLE001 - any damage: not a finished run's table
        return "unreadable"
    return value if isinstance(value, str) else "unreadable"


def finished(dirs: list[Path]) -> bool:
    """True when every member's metrics row says its run ran to its end."""
    return all(status(d) in FINISHED for d in dirs)


def taken(dirs: list[Path], run_dir: Path) -> str | None:
    """Why the run directory holds a run a new one must not replace (None: it holds none): a
    resumable checkpoint.pt, or a member whose metrics.csv says it finished."""
    if os.path.lexists(Path(run_dir) / CHECKPOINT):
        return f"holds a resumable {CHECKPOINT} (an interrupted run)"
    done = [d for d in dirs if status(d) in FINISHED]
    if done:
        where = "" if done == [Path(run_dir)] else f" ({', '.join(_rel(d, run_dir) for d in done)})"
        return f"holds a finished run{where}"
    return None


def refuse_taken(dirs: list[Path], run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a plain rerun into a run directory that holds a finished or interrupted run."""
    if resume or overwrite:
        return
    why = taken(dirs, run_dir)
    if why:
        raise RunDirTaken(f"{run_dir} {why}; resume=true continues it (a finished run is left "
                          "as it is), overwrite=true starts over and replaces it, or set "
                          "hydra.run.dir=<a new folder>")


def symlink_inside(folder: str | Path) -> Path | None:
    """The first symbolic link under `folder` (not following any), or None. A run directory's
    files are dfkd's and Hydra's own; a link among them would send a write elsewhere."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    seen = 0
    for root, subdirs, files in os.walk(folder, followlinks=False):
        for name in [*subdirs, *files]:
            seen += 1
            path = Path(root) / name
            if path.is_symlink():
                return path
            if seen > MAX_ENTRIES:
                return None
    return None


def refuse_symlinks(folder: str | Path, key: str) -> None:
    """One line naming the link, before anything is written under `folder`."""
    link = symlink_inside(folder)
    if link is not None:
        raise RunDirTaken(f"{link} is a symbolic link; dfkd writes only plain files in a run "
                          f"directory and follows no link there: remove it, or set "
                          f"{key}=<a new folder>")


def _rel(path: Path, start: Path) -> str:
    try:
        return str(Path(path).relative_to(start))
    except ValueError:
        return str(path)
