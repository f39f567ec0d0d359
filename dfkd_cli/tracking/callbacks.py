"""Hydra callbacks (registered in configs/hydra/dfkd.yaml under hydra.callbacks).

WritableOutput refuses, with one line and exit 2, a run or sweep directory that cannot be
written, before Hydra tries to write its .hydra/ files there (which would end in a traceback);
for a single run it also takes the run directory's lock (a second process writing it is refused)
and keeps its .hydra/ files as they were, for a refused run to put back.

SweepSummary writes `dfkd report`'s files (report.csv, report.md, report.tex and runs.csv, every
job's metrics rows concatenated) into the sweep directory when a multirun ends. Hydra calls
on_multirun_end in the process that ran the sweeper, after the launcher has returned every job,
so the summary is written the same way whichever launcher ran the jobs (basic, joblib,
submitit, ray, ...). A summary that cannot be written only logs a warning: the jobs' own files
are the record, and `dfkd report <sweep dir>` rebuilds the summary at any time. It also counts
the jobs that failed and keeps the first one's reason (`SWEEP_END`), so that `dfkd -m` ends
with a non-zero exit code and that reason after the summary is written, and logs the jobs' wall
times, naming those that ran long.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dfkd_cli.errors import UserError
from dfkd_cli.loop import resume
from dfkd_cli.report import gather
from dfkd_cli.report import write as report
from dfkd_cli.report.summary import BASELINE, REAL_REFERENCE, reference_file
from dfkd_cli.report.text import text_cell
from dfkd_cli.utils import run_dirs
from dfkd_cli.utils.files import hold_run_lock
from dfkd_cli.utils.progress import duration

log = logging.getLogger("dfkd")

LONG = 2.0  # a job that took more than this times the sweep's median wall time "ran long"
# statuses of a job that did not finish (diverged: it finished, with a status the table shows)
UNFINISHED = ("failed", "unreadable", gather.MISSING, "interrupted", "unknown")
# set at the end of a multirun, in the launching process: jobs gathered, jobs failed, summary,
# and an error the command ends with (a search none of whose trials completed: tracking/search.py)
SWEEP_END: dict[str, Any] = {}


def _unwritable(folder: Path) -> Path | None:
    """The folder, or its nearest existing parent, when the process cannot write there."""
    for path in (folder, *folder.parents):
        if path.exists():
            return None if path.is_dir() and os.access(path, os.W_OK | os.X_OK) else path
    return None


def _job(run_dir: str, sweep_dir: Path) -> str:
    """The job's folder under the sweep directory (a population member writes seed<N>/ in it)."""
    try:
        return Path(run_dir).relative_to(sweep_dir).parts[0]
    except (ValueError, IndexError):
        return str(run_dir)


def _job_order(job: str) -> tuple:
    return (0, int(job), "") if job.isdigit() else (1, 0, job)


def first_failure(runs: pd.DataFrame, sweep_dir: Path) -> str | None:
    """"job <n>: <its error>" of the lowest-numbered job that did not finish, or None."""
    bad = runs[runs["status"].isin(UNFINISHED)]
    if bad.empty:
        return None
    jobs = {_job(str(row.get("run_dir")), sweep_dir): row for _, row in bad.iterrows()}
    job = min(jobs, key=_job_order)
    return f"job {job}: {text_cell(jobs[job].get('error')) or jobs[job].get('status')}"


def job_times(runs: pd.DataFrame, sweep_dir: Path) -> dict[str, float]:
    """Each job's wall time in seconds (a population's: its members'), where it was recorded."""
    if "wall_s" not in runs.columns:
        return {}
    timed = runs[pd.to_numeric(runs["wall_s"], errors="coerce").notna()]
    times: dict[str, float] = {}
    for _, row in timed.iterrows():
        job = _job(str(row.get("run_dir")), sweep_dir)
        times[job] = max(times.get(job, 0.0), float(row["wall_s"]))
    return times


def ran_long(times: dict[str, float], factor: float = LONG) -> str:
    """The jobs' wall times in one line: median, longest, and the jobs that took more than
    `factor` times the median."""
    median = float(pd.Series(list(times.values())).median())
    ordered = sorted(times, key=lambda job: -times[job])
    if len(times) == 1:
        return f"the job took {duration(median)}"
    text = (f"{len(times)} jobs took {duration(median)} each (median), the longest "
            f"{duration(times[ordered[0]])} (job {ordered[0]})")
    long = [job for job in ordered if times[job] > factor * median]
    if long:
        text += (f"; ran long (over {factor:g} x the median): "
                 + ", ".join(f"{job} ({duration(times[job])})" for job in long))
    return text


class WritableOutput(Callback):
    """Check the run (or sweep) directory can be written before any job starts."""

    def _check(self, folder: str, key: str) -> None:
        blocked = _unwritable(Path(folder).absolute())
        if blocked is not None:
            print(f"dfkd: error: cannot write the output directory {folder}: {blocked} is not "
                  f"a writable folder; set {key}=<a folder you can write>", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = str(config.hydra.run.dir)
        self._check(run_dir, "hydra.run.dir")
        # before Hydra writes .hydra/ there: no link inside sends a write elsewhere, the run
        # directory is this process's alone, and a refused run can put back every .hydra/ file
        # as it was
        try:
            run_dirs.refuse_symlinks(run_dir, "hydra.run.dir")
            hold_run_lock(run_dir)
        except UserError as exc:
            print(f"dfkd: error: {exc}", file=sys.stderr)
            sys.exit(2)
        resume.remember_hydra_files(run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = str(config.hydra.sweep.dir)
        self._check(sweep_dir, "hydra.sweep.dir")
        # before any job writes: the same rules as a single run's, for every job directory
        try:
            run_dirs.refuse_symlinks(sweep_dir, "hydra.sweep.dir")
            subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
            if subdir == "${hydra.job.num}":  # Hydra's default: <sweep dir>/<job number>
                _refuse_finished_jobs(Path(sweep_dir), bool(config.get("resume", False))
                                      or bool(config.get("overwrite", False)))
        except UserError as exc:
            print(f"dfkd: error: {exc}", file=sys.stderr)
            sys.exit(2)


def _refuse_finished_jobs(sweep_dir: Path, allowed: bool) -> None:
    """Refuse a sweep, before any job starts, whose numbered job folders hold finished or
    interrupted jobs, unless `allowed` (resume=true: they are skipped or continued;
    overwrite=true: started over)."""
    if allowed or not sweep_dir.is_dir():
        return
    taken = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit() and p.is_dir()),
                      key=lambda p: int(p.name)):
        members = [job, *sorted(p for p in job.glob("seed*") if p.is_dir())]
        if run_dirs.taken(members, job):
            taken.append(job.name)
    if taken:
        shown = ", ".join(taken[:10]) + (", ..." if len(taken) > 10 else "")
        raise run_dirs.RunDirTaken(
            f"{sweep_dir} holds finished or interrupted jobs ({shown}); resume=true runs only "
            "what did not finish, overwrite=true starts every job over, or set "
            "hydra.sweep.dir=<a new folder>")


class SweepSummary(Callback):
    """At the end of a multirun, summarise the sweep directory into itself."""

    def __init__(self, baseline: str = BASELINE, reference: str | None = None,
                 enabled: bool = True, reference_arm: str = REAL_REFERENCE) -> None:
        self.baseline = baseline
        self.reference = reference
        self.enabled = enabled
        self.reference_arm = reference_arm

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        reference = (self.reference if self.reference and reference_file(self.reference).is_file()
                     else None)
        if self.reference and reference is None:
            log.warning("sweep summary: reference %s not found; summarising without it",
                        self.reference)
        try:
            runs = gather.gather([sweep_dir])
        except UserError:
            runs = None
        if runs is not None:
            SWEEP_END.update(jobs=len(runs), summary=sweep_dir / "report.md",
                             failed=int(runs["status"].isin(UNFINISHED).sum()),
                             first_failure=first_failure(runs, sweep_dir))
        try:
            result = report.write_report([sweep_dir], sweep_dir, self.baseline, reference,
                                         reference_arm=self.reference_arm)
        except UserError as exc:
            log.warning("sweep summary not written: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - never lose the sweep's end to a summary bug
            log.warning("sweep summary not written (%s: %s); run `dfkd report %s`",
                        type(exc).__name__, exc, sweep_dir)
            return
        runs, fails = result["runs"], result["failures"]
        log.info("sweep summary: %d runs, %d failed or incomplete -> %s", len(runs), len(fails),
                 sweep_dir / "report.md")
        times = job_times(runs, sweep_dir)
        if times:
            log.info("sweep summary: %s", ran_long(times))
        for _, row in fails.iterrows():
            log.warning("not ok: %s (%s) %s", row.get("run_dir"), row.get("status"),
                        text_cell(row.get("error")))
