"""The real-data reference arms (strategy=real_rows: arm=real_kd, arm=real_data): the student
sees its own split's training rows only, labelled by the teacher or by the real targets, and a
population of them gives the separate runs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import (
    QUICK_DISTILL,
    QUICK_TEACHER,
    dfkd_here,
    load_teacher,
    make_config,
    member_splits,
)

from dfkd_cli.commands import distill, records
from dfkd_cli.data.datasets import load_table
from dfkd_cli.strategies.real_rows import RealRows

CPU = torch.device("cpu")


def config(workdir, arm: str, members: str):
    return make_config("distill", [f"arm={arm}", members, "selection=both", *QUICK_DISTILL,
                                   f"teacher_store={workdir}/outputs/teachers", "progress=false"])


def rows_seen(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record every (x_g, label) batch the reference strategy hands the student."""
    seen = []
    labels = RealRows.labels

    def recording(self, teacher, x, n_g):
        y = labels(self, teacher, x, n_g)
        seen.append((x[:, :n_g].clone(), y[:, :n_g].clone()))
        return y
    monkeypatch.setattr(RealRows, "labels", recording)
    return seen


def matches(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """For each row of x (n, d), the index of an identical row of `rows` (N, d), or -1."""
    same = (x.unsqueeze(1) == rows.unsqueeze(0)).all(dim=2)
    return torch.where(same.any(dim=1), same.float().argmax(dim=1), -1)


@pytest.mark.parametrize("arm", ["real_kd", "real_data"])
def test_reference_arms_train_on_the_training_rows_only(workdir, tmp_path, monkeypatch, arm):
    dfkd_here("train-teacher", "seed=2", *QUICK_TEACHER, cwd=workdir)  # kept if already there
    seen = rows_seen(monkeypatch)
    cfg = config(workdir, arm, "seeds=[1,2]")
    distill.run(cfg, tmp_path)
    assert len(seen) == 6 * 3  # epochs x steps: every batch is x_g (alpha = 1)
    table = load_table(cfg.dataset, cfg.data_dir)
    teacher = load_teacher(cfg, [1, 2], table, CPU)
    splits = member_splits(cfg, teacher, table, [1, 2], CPU)
    x = torch.cat([batch for batch, _ in seen], dim=1)
    y = torch.cat([labels for _, labels in seen], dim=1)
    for k, part in enumerate(splits):
        index = matches(x[k], part.x_train)
        assert (index >= 0).all()  # every row drawn is one of this member's training rows
        for other in (part.x_val, part.x_test):
            assert (matches(x[k], other) < 0).all()  # and none is a validation or test row
        assert len(index.unique()) > 0.2 * len(index)  # drawn across the training rows
        expected = (part.y_train[index] if arm == "real_data"
                    else teacher.module(x)[k].detach())
        torch.testing.assert_close(y[k], expected)
    row = pd.read_csv(tmp_path / "seed1" / "metrics.csv").iloc[0]
    assert (row.arm, row.strategy, row.alpha, row.batch_size) == (arm, "real_rows", "constant1",
                                                                  100)


def test_a_population_of_reference_runs_equals_the_separate_runs(workdir, tmp_path):
    dfkd_here("train-teacher", "seed=2", *QUICK_TEACHER, cwd=workdir)
    distill.run(config(workdir, "real_data", "seeds=[1,2]"), tmp_path / "population")
    for seed in (1, 2):
        distill.run(config(workdir, "real_data", f"seed={seed}"), tmp_path / f"single{seed}")
        alone = pd.read_csv(tmp_path / f"single{seed}" / "metrics.csv")
        member = pd.read_csv(tmp_path / "population" / f"seed{seed}" / "metrics.csv")
        for column in ("student_rmse", "fidelity_rmse", "selected_epoch"):
            assert member[column].tolist() == pytest.approx(alone[column].tolist(), rel=1e-4,
                                                            abs=1e-6), column


def test_a_strategy_label_distinguishes_the_labels():
    targets = make_config("distill", ["strategy=real_rows", "strategy.labels=targets"])
    teacher = make_config("distill", ["strategy=real_rows"])
    assert records.labels(targets)["arm"] == "real_rows_targets_decreasing_m50"
    assert records.labels(teacher)["arm"] == "real_rows_decreasing_m50"


def test_without_a_dataset_it_refuses_in_one_line(tmp_path):
    proc = dfkd_here("distill", "dataset=none", "arm=real_kd", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "strategy=real_rows" in lines[0] and "dataset=none" in lines[0]
