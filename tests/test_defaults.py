"""The default recipe as `dfkd distill` builds it: prior=auto (the teacher's Gaussian copula),
selection=fidelity (the epoch that agrees best with the teacher on a fixed set of prior draws,
no labelled row anywhere) and E = 8000. Every set here comes from commands/distill.py
(build_loop, fidelity_set, run), never a hand-built one, on a table whose features are
correlated, an integer count and a composition summing to 100, so that a dropped correlation
or a missing projection shows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import load_teacher, make_config, member_splits, run_here

from dfkd_cli.commands import distill
from dfkd_cli.data import domains
from dfkd_cli.data.datasets import load_table
from dfkd_cli.loop.student_loop import build_student
from dfkd_cli.nets.checkpoints import load_checkpoint
from dfkd_cli.teachers import loader as teachers
from dfkd_cli.utils import runtime
from dfkd_cli.utils.rng import Streams

CPU = torch.device("cpu")
FEATURES = ["a", "b", "count", "p1", "p2", "p3"]
COUNT, PARTS = 2, [3, 4, 5]
# short runs of the default recipe; a 30x learning rate makes the scores go up and down, so
# that fidelity and val select epochs before the last (checked where it matters)
QUICK = ["epochs=8", "steps_per_epoch=3", "log_every=2", "batch_size=20", "teacher.hidden=[16]",
         "optimizer.lr=0.03"]
LR = "optimizer.lr=0.001"  # the paper's
ROW_COLUMNS = ("selected_epoch", "student_rmse", "fidelity_rmse", "fidelity_rmse_gaussian",
               "val_rmse", "teacher_rmse")


def mixed_table(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """a and b strongly correlated (normal-score correlation about 0.9), an integer count of
    many values, three parts of 100 (a composition) and a smooth target."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(rows)
    b = a + 0.4 * rng.standard_normal(rows)
    count = rng.poisson(20, rows)
    parts = rng.dirichlet([2, 3, 4], rows) * 100
    y = np.sin(a) + 0.5 * b + 0.05 * count + parts[:, 0] / 50 + 0.1 * rng.standard_normal(rows)
    return pd.DataFrame(np.column_stack([a, b, count, parts, y]), columns=[*FEATURES, "y"])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A working directory with mixed.csv and quick teachers of it for seeds 1 and 2."""
    where = tmp_path_factory.mktemp("defaults")
    mixed_table().to_csv(where / "mixed.csv", index=False)
    run_here("train-teacher", [*data(where), "seeds=[1,2]", "epochs=3", "batch_size=32",
                               "teacher.hidden=[16]"], where / "teachers", where)
    return where


def data(where) -> list[str]:
    return ["dataset=csv", f"dataset.path={where / 'mixed.csv'}", "dataset.name=mixed",
            "dataset.n_train=300", "dataset.val_fraction=0.3"]


def config(where, *overrides):
    return make_config("distill", [*data(where), f"teacher_store={where / 'outputs/teachers'}",
                                   "progress=false", *QUICK, *overrides])


def built(where, seeds: list[int], *overrides):
    """The student loop `dfkd distill` runs for members `seeds` (distill.run up to the loop),
    with its teacher and splits."""
    cfg = config(where, *overrides)
    table = load_table(cfg.dataset, cfg.data_dir)
    teacher = load_teacher(cfg, seeds, table, CPU)
    splits = member_splits(cfg, teacher, table, seeds, CPU)
    runtime.seed_everything(seeds[0])
    rng = Streams(seeds, CPU)
    _, student = build_student(cfg.student, cfg.dataset.input_shape, cfg.fast_path, teacher, rng)
    return distill.build_loop(cfg, teacher, splits, student, rng, seeds), teacher, splits


def raw(x: torch.Tensor, teacher, k: int) -> torch.Tensor:
    scaler = teacher.scalers[k]
    return x.double() * scaler.x_std.double() + scaler.x_mean.double()


@pytest.fixture(scope="module")
def runs(root):
    """Run directories of `distill.run` in this process, by their overrides, each run once."""
    done = {}

    def run(*overrides: str):
        if overrides not in done:
            where = root / "runs" / f"run{len(done)}"
            distill.run(config(root, *overrides), where)
            done[overrides] = where
        return done[overrides]
    return run


def test_the_defaults_are_the_recipe(root):
    cfg = make_config("distill")
    assert (cfg.prior, cfg.selection, cfg.epochs, cfg.domain) == ("auto", "fidelity", 8000, "off")
    loop, _, _ = built(root, [1])
    assert loop.strategy.sampler.name == "copula"  # auto: the teacher carries its statistics


def test_the_fidelity_set_holds_no_labelled_row_and_its_labels_are_the_teachers(root):
    """selection=fidelity's promise is no labelled row anywhere: the set it scores epochs on is
    prior draws (none of them a training, validation or test row) labelled by the teacher, and
    the loop holds no validation set although the run has validation rows."""
    loop, teacher, splits = built(root, [1, 2])
    assert set(loop.sets) == {"fidelity"}
    x, y = loop.sets["fidelity"]
    assert x.shape == (2, distill.FIDELITY_ROWS, len(FEATURES))
    torch.testing.assert_close(y, teacher.module(x), rtol=0, atol=0)
    for k, part in enumerate(splits):
        rows = torch.cat([part.x_train, part.x_val, part.x_test])
        assert torch.cdist(x[k], rows).min() > 1e-3  # not one of the run's rows
    assert not torch.equal(x[0], x[1])  # each member its own draws


def test_the_selected_student_never_depends_on_the_validation_labels(root, tmp_path,
                                                                    monkeypatch):
    """The same run with the validation targets replaced by noise keeps the same epoch and the
    same weights: nothing labelled chooses the student."""
    first = tmp_path / "true_labels"
    distill.run(config(root, "seed=1"), first)
    splits = teachers.member_splits

    def noisy(*args, **kwargs):
        return [replace(part, y_val=torch.randn_like(part.y_val)) for part in splits(*args,
                                                                                        **kwargs)]
    monkeypatch.setattr(teachers, "member_splits", noisy)
    second = tmp_path / "noise_labels"
    distill.run(config(root, "seed=1"), second)
    rows = [pd.read_csv(d / "metrics.csv").iloc[0] for d in (first, second)]
    assert rows[0].val_rmse != rows[1].val_rmse  # the validation labels did change
    assert rows[0].selected_epoch == rows[1].selected_epoch
    assert rows[0].fidelity_rmse_gaussian == rows[1].fidelity_rmse_gaussian
    weights = [load_checkpoint(d / "student.pt")["state_dict"] for d in (first, second)]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_with_domain_on_the_fidelity_set_lies_in_the_domain(root):
    loop, teacher, _ = built(root, [1, 2], "domain=on")
    x, y = loop.sets["fidelity"]
    torch.testing.assert_close(y, teacher.module(x), rtol=0, atol=0)
    for k, found in enumerate(teacher.domains):
        values = raw(x[k], teacher, k)
        count = values[:, COUNT]
        assert ((count - count.round()).abs() < 1e-3).all()  # integers
        assert count.min() >= found.low[COUNT] - 1e-3 and count.max() <= found.high[COUNT] + 1e-3
        [group] = found.simplex
        assert group["features"] == PARTS and group["total"] == pytest.approx(100)
        parts = values[:, PARTS]
        assert (parts > -1e-3).all() and ((parts.sum(1) - 100).abs() < 1e-2).all()
    # domain=off (the default): the copula's draws interpolate between quantiles, off the
    # integers and off the simplex, so the checks above can fail
    loose, teacher, _ = built(root, [1], "domain=off")
    count = raw(loose.sets["fidelity"][0][0], teacher, 0)[:, COUNT]
    assert ((count - count.round()).abs() > 0.01).any()


def test_member_k_draws_the_set_of_the_run_with_seed_k(root):
    together, _, _ = built(root, [1, 2])
    for k, seed in enumerate((1, 2)):
        alone, _, _ = built(root, [seed])
        for part in (0, 1):  # the rows and their labels
            torch.testing.assert_close(together.sets["fidelity"][part][k],
                                       alone.sets["fidelity"][part][0], rtol=1e-5, atol=1e-6)


def test_the_copula_draws_keep_the_stored_normal_score_correlation(root):
    """prior=auto is the copula: its draws (the fidelity set, raw units) have the teacher's
    stored normal-score correlation, not only its marginals (independent marginals would give
    about 0 where the stored matrix says 0.9)."""
    loop, teacher, _ = built(root, [1, 2])
    x = loop.sets["fidelity"][0]
    for k, found in enumerate(teacher.domains):
        stored = torch.tensor(found.copula)
        assert stored[0, 1] > 0.85 and stored[PARTS[0], PARTS[2]] < -0.3
        drawn = torch.tensor(domains.infer(raw(x[k], teacher, k).numpy()).copula)
        torch.testing.assert_close(drawn, stored, atol=0.1, rtol=0)


@pytest.mark.parametrize("several", ["all", "both"])
def test_each_row_of_several_selections_is_the_run_with_that_selection_alone(runs, several):
    """selection=all (last, fidelity, val) and both (last, val) are one training with a row and a
    student file each: each equals the run with that selection alone, row and weights."""
    together = runs("seed=1", f"selection={several}")
    rows = pd.read_csv(together / "metrics.csv").set_index("selection")
    kept = {"all": ["last", "fidelity", "val"], "both": ["last", "val"]}[several]
    assert list(rows.index) == kept
    last = rows.loc["last", "selected_epoch"]
    for n, selection in enumerate(kept):
        alone_dir = runs("seed=1", f"selection={selection}")
        alone = pd.read_csv(alone_dir / "metrics.csv").iloc[0]
        for column in ROW_COLUMNS:
            assert rows.loc[selection, column] == alone[column], (selection, column)
        if selection != "last":  # the scores went up and down: an earlier epoch was kept
            assert rows.loc[selection, "selected_epoch"] < last, selection
        name = "student.pt" if n == 0 else f"student_{selection}.pt"
        mine = load_checkpoint(together / name)["state_dict"]
        theirs = load_checkpoint(alone_dir / "student.pt")["state_dict"]
        assert all(torch.equal(mine[p], theirs[p]) for p in mine), selection


def test_a_population_under_the_defaults_equals_its_members_alone(runs):
    """seeds=[1,2] with prior=auto (copula) and selection=fidelity, at the paper's learning rate:
    each member ends as its run alone, to float32 rounding (docs/testing.md), which bounded's
    step on x magnifies: metrics at 1e-4 relative (1e-5 seen), the history at 1e-3 (its losses:
    5e-4 seen), weights at 1e-4 / 5e-5 (1e-5 seen). A member mix-up moves them further (every
    member scoring member 0's set: its synthetic_fidelity_rmse by 10% or more)."""
    population = runs("seeds=[1,2]", LR)
    for seed in (1, 2):
        alone = runs(f"seed={seed}", LR)
        member = population / f"seed{seed}"
        mine, theirs = (pd.read_csv(d / "metrics.csv").iloc[0] for d in (member, alone))
        assert (mine.seed, mine.members, mine.prior, mine.selection) == (seed, 2, "auto",
                                                                         "fidelity")
        for column in ROW_COLUMNS:
            assert mine[column] == pytest.approx(theirs[column], rel=1e-4), column
        pd.testing.assert_frame_equal(pd.read_csv(member / "history.csv"),
                                      pd.read_csv(alone / "history.csv"), rtol=1e-3, atol=1e-6)
        weights = [load_checkpoint(d / "student.pt")["state_dict"] for d in (member, alone)]
        for name, tensor in weights[1].items():
            torch.testing.assert_close(weights[0][name], tensor, rtol=1e-4, atol=5e-5)
