"""A population (`seeds=[...]`) gives the results of the separate runs with the same seeds."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import QUICK_DISTILL, QUICK_TEACHER, dfkd
from dfkd_cli.models import load_checkpoint

SEEDS = [1, 2, 3]


@pytest.mark.parametrize("strategy,selection", [("bounded", "val"), ("random", "last")])
def test_population_equals_separate_runs(workdir, tmp_path, strategy, selection):
    for seed in SEEDS[1:]:  # the workdir fixture trained seed 1
        dfkd("train-teacher", f"seed={seed}", *QUICK_TEACHER, cwd=workdir)
    common = [f"strategy={strategy}", f"selection={selection}", *QUICK_DISTILL]
    separate = []
    for seed in SEEDS:
        dfkd("distill", f"seed={seed}", *common, f"hydra.run.dir={tmp_path}/single{seed}",
             cwd=workdir)
        separate.append((pd.read_csv(tmp_path / f"single{seed}/metrics.csv"),
                         pd.read_csv(tmp_path / f"single{seed}/history.csv")))
    dfkd("distill", "seeds=[1,2,3]", *common, f"hydra.run.dir={tmp_path}/population",
         cwd=workdir)
    for seed, (metrics, history) in zip(SEEDS, separate):
        member = tmp_path / "population" / f"seed{seed}"
        pop_metrics = pd.read_csv(member / "metrics.csv")
        pop_history = pd.read_csv(member / "history.csv")
        assert pop_metrics.loc[0, "seed"] == seed and pop_metrics.loc[0, "members"] == 3
        for column in ("teacher_rmse", "student_rmse", "fidelity_rmse", "selected_epoch"):
            assert pop_metrics.loc[0, column] == pytest.approx(metrics.loc[0, column],
                                                               rel=1e-4, abs=1e-6), column
        pd.testing.assert_frame_equal(pop_history, history, rtol=1e-4, atol=1e-6)
    # the members differ from each other: each ran with its own seed, teacher and split
    students = [m.loc[0, "student_rmse"] for m, _ in separate]
    assert len(set(students)) == 3


def test_teacher_population_equals_separate_teachers(tmp_path):
    """train-teacher seeds=[4,5] writes the teachers train-teacher seed=4 and seed=5 write."""
    for seed in (4, 5):
        dfkd("train-teacher", f"seed={seed}", *QUICK_TEACHER, "teacher_store=single",
             f"hydra.run.dir={tmp_path}/single{seed}", cwd=tmp_path)
    dfkd("train-teacher", "seeds=[4,5]", *QUICK_TEACHER, "teacher_store=population",
         f"hydra.run.dir={tmp_path}/population", cwd=tmp_path)
    for seed in (4, 5):
        single, pop = (load_checkpoint(tmp_path / store / f"friedman/mlp64-tanh/seed{seed}"
                                       / "teacher.pt") for store in ("single", "population"))
        for name, tensor in single["state_dict"].items():
            torch.testing.assert_close(pop["state_dict"][name], tensor, rtol=1e-4, atol=1e-5)
        assert pop["metrics"]["best_epoch"] == single["metrics"]["best_epoch"]
        member = pd.read_csv(tmp_path / "population" / f"seed{seed}" / "metrics.csv").iloc[0]
        assert member.seed == seed and member.members == 2
