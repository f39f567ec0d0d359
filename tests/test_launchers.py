"""Sweeps through Hydra's launcher plugins (the [joblib] and [slurm] extras): every job runs in a
worker process, finds its teacher in the shared store, and the sweep-end callback writes the
summary with every job's row into the sweep directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import QUICK_DISTILL, dfkd

# 4 jobs: 2 arms x 2 selections. log_every goes through the `mod` resolver, so a worker that
# had not registered it would fail its job (5 % 3 = 2, QUICK_DISTILL's own value).
JOBS = ["arm=random_sampling,bounded", "selection=last,val"]
SETTINGS = [o for o in QUICK_DISTILL if not o.startswith("log_every=")] + ["log_every=${mod:5,3}"]

LAUNCHERS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher",
               ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "JoblibLauncher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher",
                       ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
                       "LocalLauncher"),
}


@pytest.mark.parametrize("name", list(LAUNCHERS))
def test_sweep_through_launcher_writes_the_summary(workdir, tmp_path, name):
    plugin, overrides, target = LAUNCHERS[name]
    pytest.importorskip(plugin, reason=f"the launcher extra for {name} is not installed")
    sweep = tmp_path / "sweep"
    dfkd("distill", "-m", *JOBS, *SETTINGS, *overrides, f"hydra.sweep.dir={sweep}", cwd=workdir)
    assert target in (sweep / "multirun.yaml").read_text()  # the plugin ran the sweep
    runs = pd.read_csv(sweep / "runs.csv")
    assert len(runs) == 4 and set(runs.status) == {"ok"}, runs
    assert sorted(Path(d).name for d in runs.run_dir) == ["0", "1", "2", "3"]
    assert sorted(zip(runs.arm, runs.selection)) == [
        ("bounded", "last"), ("bounded", "val"), ("random_sampling", "last"),
        ("random_sampling", "val")]
    # the teacher came from the shared store under the launching directory
    assert set(runs.teacher_path) == {"outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt"}
    summary = pd.read_csv(sweep / "report.csv")
    assert len(summary) == 4 and list(summary.n) == [1, 1, 1, 1]
    assert "Failed or incomplete runs (0)" in (sweep / "report.md").read_text()
    for job in range(4):
        assert list(pd.read_csv(sweep / str(job) / "history.csv").epoch) == [1, 3, 5]
    if name == "submitit_local":
        assert (sweep / ".submitit").is_dir()
