"""Every strategy through the installed CLI on the built-in dataset, and `dfkd probe`."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import QUICK_DISTILL, dfkd_here

TEACHER = "teacher.hidden=[64]"  # the workdir fixture's quick teacher

# Sweeps (one process each, jobs in order) -> per job: the history columns it must write and the
# values some of them must hold on every epoch that drew x_g
SWEEPS = {
    "samplers": (["-m", "strategy=uniform,lhs,sobol,generator,evolution"], [
        ({"outside_box": 0.0}, set()), ({"outside_box": 0.0}, set()),
        ({"outside_box": 0.0}, set()), ({}, {"gen_loss", "gen_gap"}),
        ({"outside_box": 0.0}, {"evo_objective_start", "evo_objective_end", "start_dist_max"})]),
    "bounded": (["-m", "strategy=bounded", "strategy.radius=0.5",
                 "strategy.clip_to_box=false,true"], [
        ({}, {"start_dist_max"}), ({"outside_box": 0.0}, {"start_dist_max"})]),
    "impressions": (["strategy=impressions", "strategy.steps=30"], [({}, set())]),
    "generator_alpha1": (["arm=generator_alpha1"], [({}, {"gen_loss", "gen_gap"})]),
}


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_every_strategy_end_to_end(workdir, tmp_path, sweep):
    overrides, jobs = SWEEPS[sweep]
    where = f"hydra.sweep.dir={tmp_path}" if "-m" in overrides else f"hydra.run.dir={tmp_path}/0"
    proc = dfkd_here("distill", *overrides, *QUICK_DISTILL, where, cwd=workdir)
    for number, (exact, columns) in enumerate(jobs):
        job = tmp_path / str(number)
        row = pd.read_csv(job / "metrics.csv").iloc[0]
        assert row.status == "ok" and 0 < row.student_rmse < 2, (job, proc.stdout)
        history = pd.read_csv(job / "history.csv")
        assert list(history.epoch) == [1, 3, 5]
        synthetic = history[history.alpha > 0]  # rows of epochs that drew x_g
        assert len(synthetic) >= 2
        assert {"gap_mean", "gap_max", "x_norm"} | columns <= set(history.columns), row.strategy
        assert (synthetic.gap_mean >= 0).all() and synthetic.x_norm.notna().all()
        for column, value in exact.items():
            assert (synthetic[column] == value).all(), (row.strategy, column)
    if sweep == "samplers":
        strategies = [pd.read_csv(tmp_path / str(i) / "metrics.csv").strategy[0] for i in range(5)]
        assert strategies == ["uniform", "lhs", "sobol", "generator", "evolution"]
    if sweep == "bounded":  # the L-inf ball around the start (the box may overrule it)
        history = pd.read_csv(tmp_path / "0" / "history.csv")
        assert (history[history.alpha > 0].start_dist_max <= 0.5 + 1e-5).all()
    if sweep == "generator_alpha1":
        row = pd.read_csv(tmp_path / "0" / "metrics.csv").iloc[0]
        assert (row.arm, row.batch_size, row.alpha) == ("generator_alpha1", 100, "constant1")


def test_probe_table(workdir, tmp_path):
    proc = dfkd_here("probe", "epochs=3", "samples=120", "strategies.impressions.steps=20", TEACHER,
                     f"hydra.run.dir={tmp_path}", cwd=workdir)
    table = pd.read_csv(tmp_path / "probe.csv")
    assert list(table.strategy) == ["test_rows", "random", "uniform", "lhs", "sobol", "bounded",
                                    "generator", "impressions", "evolution"]
    for column in ("gap_mean", "gap_q10", "gap_q50", "gap_q90", "gap_q99", "xnorm_mean",
                   "xnorm_q50", "outside_box", "start_dist_mean", "ms_per_batch"):
        assert column in table.columns, column
    probed = table.set_index("strategy")
    assert (probed.loc["random":, "samples"] == 120).all()
    assert (probed.gap_q10 <= probed.gap_q50).all() and (probed.gap_q50 <= probed.gap_q99).all()
    assert (probed.loc[["uniform", "lhs", "sobol", "evolution"], "outside_box"] == 0).all()
    # bounded starts from the very Gaussian draws `random` returns, then raises their gap
    assert probed.loc["bounded", "gap_mean"] > probed.loc["random", "gap_mean"]
    assert probed.loc["bounded", "start_dist_mean"] <= 2.0
    assert (table.student_epochs == 3).all() and (table.student_strategy == "random").all()
    assert "gap_q50" in proc.stdout and "evolution" in proc.stdout  # the table is printed
    assert (tmp_path / "history.csv").is_file()  # the student's own training


def test_probe_strategy_options_and_errors(workdir, tmp_path):
    proc = dfkd_here("probe", "epochs=2", "samples=60", TEACHER, "~strategy@strategies.impressions",
                     "~strategy@strategies.generator", "+strategy@strategies.bounded_r=bounded",
                     "strategies.bounded_r.radius=0.25", "quantiles=[0.5]",
                     f"hydra.run.dir={tmp_path}", cwd=workdir)
    table = pd.read_csv(tmp_path / "probe.csv").set_index("strategy")
    assert "impressions" not in table.index and "generator" not in table.index, proc.stdout
    assert table.loc["bounded_r", "start_dist_mean"] <= 0.25 + 1e-6
    assert "gap_q50" in table.columns and "gap_q90" not in table.columns
    bad = dfkd_here("probe", TEACHER, "strategies.evolution.crossover=2", cwd=workdir, check=False)
    assert bad.returncode == 2
    assert "strategies.evolution.crossover=2.0 is not valid" in bad.stderr


def test_probe_draws_from_the_prior_it_is_given(workdir, tmp_path):
    """prior= reaches the student's strategy and every probed one, as distill's does: under the
    teacher's copula the random draws lie in its stored marginals (inside its box), under N(0, I)
    they do not; bounded starts from those draws."""
    from conftest import run_here

    keep = ["~strategy@strategies.impressions", "~strategy@strategies.generator",
            "~strategy@strategies.uniform", "~strategy@strategies.lhs",
            "~strategy@strategies.sobol", "~strategy@strategies.evolution"]
    tables = {prior: run_here("probe", ["epochs=2", "samples=200", TEACHER, f"prior={prior}",
                                        *keep], tmp_path / prior, workdir).set_index("strategy")
              for prior in ("gaussian", "copula", "auto")}
    assert list(tables["copula"].index) == ["test_rows", "random", "bounded"]
    assert (tables["copula"].prior == "copula").all() and (tables["auto"].prior == "copula").all()
    assert (tables["gaussian"].prior == "gaussian").all()
    assert tables["copula"].loc["random", "outside_box"] == 0
    assert tables["gaussian"].loc["random", "outside_box"] > 0.1
    # auto is the copula for a teacher that carries its input statistics
    assert tables["auto"].loc["random", "xnorm_mean"] == tables["copula"].loc[
        "random", "xnorm_mean"]
    assert tables["copula"].loc["bounded", "xnorm_mean"] != tables["gaussian"].loc[
        "bounded", "xnorm_mean"]
