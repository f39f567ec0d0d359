"""A sweep's failing job says what a single run says: one line (its traceback only with
HYDRA_FULL_ERROR=1 or for a bug), and the sweep's closing line names the first failing job's
reason; the summary names the jobs that ran long."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from conftest import QUICK_DISTILL, dfkd_here
from dfkd_cli.tracking.callbacks import first_failure, job_times, ran_long

MISSING_TEACHER = ("no teacher checkpoint at outputs/teachers/friedman/mlp64-tanh/seed7/"
                   "teacher.pt; train it first with: dfkd train-teacher dataset=friedman seed=7")


def _sweep(workdir: Path, sweep: Path, env: dict | None = None):
    return dfkd_here("distill", "-m", "seed=1,7", *QUICK_DISTILL, f"hydra.sweep.dir={sweep}",
                     cwd=workdir, env=env, check=False)


def test_a_failing_job_logs_the_single_runs_line(workdir, tmp_path):
    single = dfkd_here("distill", "seed=7", *QUICK_DISTILL, f"hydra.run.dir={tmp_path / 'one'}",
                       cwd=workdir, check=False)
    assert single.returncode == 2
    line = single.stderr.strip().removeprefix("dfkd: error: ")
    assert line.startswith(MISSING_TEACHER)
    proc = _sweep(workdir, tmp_path / "sweep")
    log = (tmp_path / "sweep" / "1" / "distill.log").read_text()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert f"job failed: {line}\n" in log and "Traceback" not in output + log
    assert output.count(MISSING_TEACHER) == 3  # the job's line, the summary's, the closing one
    assert "sweep summary: the job took" in output
    assert proc.stderr.strip().splitlines()[-1] == (
        f"dfkd: error: 1 of 2 jobs failed or did not finish (listed in {tmp_path}/sweep/"
        f"report.md); the first, job 1: {line}")


def test_hydra_full_error_shows_the_traceback(workdir, tmp_path):
    _sweep(workdir, tmp_path / "sweep", env={"HYDRA_FULL_ERROR": "1"})
    log = (tmp_path / "sweep" / "1" / "distill.log").read_text()
    assert "Traceback (most recent call last)" in log and "UserError" in log


def test_the_first_failure_is_the_lowest_job_number():
    sweep = Path("s")
    runs = pd.DataFrame({"run_dir": ["s/10", "s/2/seed3", "s/0", "s/9"],
                         "status": ["failed", "missing", "ok", "failed"],
                         "error": ["ten", "two", "", "nine"]})
    assert first_failure(runs, sweep) == "job 2: two"
    assert first_failure(runs[runs.status == "ok"], sweep) is None


def test_the_jobs_that_ran_long_are_named():
    sweep = Path("s")
    runs = pd.DataFrame({"run_dir": ["s/0/seed1", "s/0/seed2", "s/1", "s/2", "s/3", "s/4"],
                         "wall_s": [10.0, 12.0, 11.0, 50.0, 9.0, None]})
    times = job_times(runs, sweep)
    assert times == {"0": 12.0, "1": 11.0, "2": 50.0, "3": 9.0}
    assert ran_long(times) == ("4 jobs took 12s each (median), the longest 50s (job 2); ran "
                               "long (over 2 x the median): 2 (50s)")
    assert ran_long({"0": 3.0}) == "the job took 3s"
