"""Hyper-parameter search: the value a distill job returns (`objective=`, dfkd_cli/tracking/search.py) and
an Optuna sweep through hydra-optuna-sweeper (configs/hparams_search/bounded_optuna.yaml)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import QUICK_DISTILL, dfkd_here, make_config

from dfkd_cli.config import validate
from dfkd_cli.errors import UserError
from dfkd_cli.tracking import objectives, search


def frame(**columns) -> pd.DataFrame:
    base = {"seed": [1, 2], "selection": ["last", "last"], "status": ["ok", "ok"],
            "fidelity_rmse_gaussian": [0.2, 0.4], "val_rmse": [0.5, 0.7]}
    return pd.DataFrame(base | columns)


def test_the_objective_is_the_named_column_averaged_over_members():
    cfg = make_config("distill", ["seeds=[1,2]", "selection=last"])
    assert search.objective(cfg.objective, cfg.selection, frame()) == pytest.approx(0.3)
    cfg = make_config("distill", ["seeds=[1,2]", "selection=last", "objective=val_rmse"])
    assert search.objective(cfg.objective, cfg.selection, frame()) == pytest.approx(0.6)


def test_selection_both_scores_the_last_students():
    rows = pd.concat([frame(), frame(selection=["val", "val"], fidelity_rmse_gaussian=[9.0, 9.0])])
    cfg = make_config("distill", ["seeds=[1,2]", "selection=both"])
    assert search.objective(cfg.objective, cfg.selection, rows) == pytest.approx(0.3)


def test_a_member_not_ok_makes_the_trial_fail():
    """None, not NaN: the Optuna plugin's failed-trial path tells a NaN twice and crashes."""
    cfg = make_config("distill", ["seeds=[1,2]", "selection=last"])
    assert search.objective(cfg.objective, cfg.selection, frame(status=["ok", "diverged"])) is None


@pytest.mark.parametrize("overrides, message", [
    (["objective=accuracy"], "objective='accuracy' is not valid"),
    (["objective=student_rmse", "dataset=none"], "dataset=none has none"),
])
def test_an_objective_the_run_cannot_have_is_refused_before_any_work(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(make_config("distill", overrides))


optuna = pytest.importorskip("hydra_plugins.hydra_optuna_sweeper",
                             reason="the [optuna] extra is not installed")


def sweep_jobs(sweep: Path) -> pd.DataFrame:
    """Each job's overrides and metrics row."""
    rows = []
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        metrics = pd.read_csv(job / "metrics.csv").iloc[0].to_dict()
        rows.append(metrics | {"overrides": overrides, "job": int(job.name)})
    return pd.DataFrame(rows)


def test_an_optuna_sweep_of_the_preset_writes_the_best_parameters(workdir, tmp_path):
    sweep = tmp_path / "sweep"
    dfkd_here("distill", "hparams_search=bounded_optuna", *QUICK_DISTILL,
                  "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.n_startup_trials=2",
                  f"hydra.sweep.dir={sweep}", cwd=workdir)
    jobs = sweep_jobs(sweep)
    assert len(jobs) == 4 and set(jobs.status) == {"ok"}
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    winner = jobs.loc[jobs.fidelity_rmse_gaussian.idxmin()]
    assert best["best_value"] == pytest.approx(winner.fidelity_rmse_gaussian)
    assert sorted(best["best_params"]) == ["alpha", "strategy.lr", "strategy.steps"]
    assert {f"{k}={v}" for k, v in best["best_params"].items()} <= set(winner.overrides)


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(workdir, tmp_path):
    # the shared store has seed 1's teacher and never one for seed 9999: a trial with that seed
    # fails (its metrics row says so)
    sweep = tmp_path / "sweep"
    proc = dfkd_here("distill", "hparams_search=bounded_optuna", *QUICK_DISTILL,
                     "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.n_startup_trials=4",
                     "seed=choice(1,9999)", f"hydra.sweep.dir={sweep}", cwd=workdir, check=False)
    # every trial ran; the failed ones are counted and make the sweep exit 1
    assert proc.returncode == 1 and "failed or did not finish" in proc.stdout + proc.stderr
    jobs = sweep_jobs(sweep)
    assert sorted(set(jobs.status)) == ["failed", "ok"], jobs[["seed", "status"]]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["seed"] == 1
    assert best["best_value"] == pytest.approx(jobs[jobs.status == "ok"].fidelity_rmse_gaussian.min())


def test_a_search_whose_every_trial_diverges_ends_with_its_summary(workdir, tmp_path):
    """Issue 24, item 5: optimizer.lr=inf diverges every trial; the plugin alone ends such a
    search with a traceback ('No trials are completed yet') before the sweep's report."""
    sweep = tmp_path / "sweep"
    proc = dfkd_here("distill", "hparams_search=bounded_optuna", *QUICK_DISTILL,
                     "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                     "optimizer.lr=inf", f"hydra.sweep.dir={sweep}", cwd=workdir, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert proc.stderr.strip().splitlines()[-1] == (
        f"dfkd: error: no trial of the search completed: all 2 failed or diverged (listed in "
        f"{sweep}/report.md)")
    assert set(sweep_jobs(sweep).status) == {"diverged"}
    assert (sweep / "report.md").read_text().count("diverged") >= 2
    assert not (sweep / "optimization_results.yaml").exists()


def test_a_search_of_no_trials_is_refused_before_any_work(workdir, tmp_path):
    proc = dfkd_here("distill", "hparams_search=bounded_optuna", *QUICK_DISTILL,
                     "hydra.sweeper.n_trials=0", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     cwd=workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "dfkd: error: hydra.sweeper.n_trials=0 is not valid: expected at least 1 trial")


def test_an_objective_of_a_target_the_run_lacks_is_refused_before_training(workdir, tmp_path,
                                                                             monkeypatch):
    """Issue 24, item 6: objective=student_rmse_bogus trained, wrote status=ok, then exited 2."""
    from dfkd_cli.commands import distill
    monkeypatch.chdir(workdir)  # its teacher store
    monkeypatch.setattr(distill, "build_loop", lambda *a, **k: pytest.fail("trained first"))
    cfg = make_config("distill", ["objective=student_rmse_bogus", *QUICK_DISTILL])
    objectives.check(cfg.objective, has_rows=True)  # the name alone looks fine: <column>_<target>
    with pytest.raises(UserError, match=r"^objective=student_rmse_bogus is not valid: this run "
                                        r"has one output; expected student_rmse$"):
        distill.run(cfg, tmp_path / "run")
    objectives.check_outputs("val_rmse_y2", ["y1", "y2"])
    with pytest.raises(UserError, match=r"outputs \['y1', 'y2'\]; expected val_rmse or one of"):
        objectives.check_outputs("val_rmse_y3", ["y1", "y2"])
