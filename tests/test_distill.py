"""The student loop's pieces: alpha schedules, the mixed loss, selection on validation rows."""

from __future__ import annotations

import pytest
import torch
from conftest import make_config

from dfkd_cli.commands import distill, records
from dfkd_cli.commands.records import loop_settings
from dfkd_cli.config import register_configs
from dfkd_cli.errors import UserError
from dfkd_cli.loop import student_loop
from dfkd_cli.loop.selection import selections
from dfkd_cli.nets import mlp
from dfkd_cli.strategies.base import Strategy
from dfkd_cli.strategies.registry import STRATEGIES
from dfkd_cli.teachers.loader import Teacher
from dfkd_cli.utils.rng import Streams, member_seeds


@pytest.mark.parametrize("schedule,expected", [
    ("decreasing", [0.75, 0.5, 0.25, 0.0]), ("increasing", [0.25, 0.5, 0.75, 1.0]),
])
def test_alpha_schedules(schedule, expected):
    cfg = make_config("distill", [f"alpha={schedule}"])
    assert [records.alpha(cfg).at(t, 4) for t in range(4)] == expected


@pytest.mark.parametrize("schedule,expected", [
    ("decreasing", [0.5, 0.0, 0.0, 0.0, 0.0]), ("increasing", [0.5, 1.0, 1.0, 1.0, 1.0]),
])
def test_alpha_moves_over_its_horizon_then_stays_at_its_end(schedule, expected):
    """alpha.horizon=H: alpha falls (rises) over H epochs and stays at 0 (1) for the rest of
    the run; horizon=null is the paper's schedule over the run's E, to the last bit."""
    cfg = make_config("distill", [f"alpha={schedule}", "alpha.horizon=2"])
    assert [records.alpha(cfg).at(t, 5) for t in range(5)] == expected
    assert records.labels(cfg)["alpha"] == f"{schedule}-h2"
    paper = make_config("distill", [f"alpha={schedule}"])
    assert paper.alpha.horizon is None and records.labels(paper)["alpha"] == schedule
    sign = 1 if schedule == "increasing" else -1
    assert [records.alpha(paper).at(t, 7) for t in range(7)] == [
        (1 - sign) / 2 + sign * (t + 1) / 7 for t in range(7)]


def test_constant_alpha():
    cfg = make_config("distill", ["alpha=constant", "alpha.value=0.3"])
    assert {records.alpha(cfg).at(t, 7) for t in range(7)} == {0.3}
    assert records.labels(cfg)["alpha"] == "constant0.3"


class Counting(Strategy):
    """A strategy that counts how often each kind of batch is drawn."""

    def __init__(self):
        super().__init__(None, 3, None, Streams([0], torch.device("cpu")))
        self.synthetic = self.prior_draws = 0

    def sample(self, teacher, student, n):
        self.synthetic += 1
        return torch.randn(1, n, 3)

    def prior(self, n):
        self.prior_draws += 1
        return torch.randn(1, n, 3)


@pytest.mark.parametrize("alpha,value,synthetic,prior", [
    ("constant", 1.0, 12, 0), ("constant", 0.0, 0, 12), ("decreasing", 1.0, 9, 12),
])
def test_a_term_with_zero_weight_is_not_drawn(alpha, value, synthetic, prior):
    """Decreasing over 4 epochs: alpha = .75, .5, .25, 0 -> the last epoch draws no x_g."""
    cfg = make_config("distill", ["epochs=4", "steps_per_epoch=3", f"alpha={alpha}",
                                  f"alpha.value={value}", "log_every=1", "selection=last"])
    rng = Streams([0], torch.device("cpu"))
    teacher = Teacher(mlp.StackedMLP(1, 3, [8], "tanh").init_(rng).requires_grad_(False), 3,
                      None, ["t"])
    strategy = Counting()
    history, selected = student_loop.train_student(loop_settings(cfg), teacher, mlp.StackedMLP(1, 3, [4], "tanh").init_(rng), strategy, None)
    assert (strategy.synthetic, strategy.prior_draws) == (synthetic, prior)
    assert [row["epoch"] for row in history[0]] == [0, 1, 2, 3] and selected == [3]


def test_selection_both_reports_last_then_val():
    """selection=both is one training with two rows: last first (its weights are student.pt),
    then val (finish("val") overwrites the weights, so it must come second)."""
    assert selections("both") == ["last", "val"]
    assert selections("val") == ["val"] and selections("last") == ["last"]


def test_member_seeds_name_the_population():
    assert member_seeds(4, None) == [4]
    assert member_seeds(4, [3, 1]) == [3, 1]
    with pytest.raises(UserError, match=r"seeds=\[2, 2\] repeats a seed"):
        member_seeds(1, [2, 2])


def test_selection_val_restores_each_members_best_epoch():
    """Two members, logged every epoch: each ends with the weights of its own best epoch."""
    cfg = make_config("distill", ["epochs=12", "steps_per_epoch=2", "selection=val",
                                  "log_every=1", "strategy=random", "optimizer.lr=0.05"])
    rng = Streams([0, 1], torch.device("cpu"))
    teacher = Teacher(mlp.StackedMLP(2, 3, [8], "tanh").init_(rng).requires_grad_(False), 3,
                      None, ["t", "t"])
    student = mlp.StackedMLP(2, 3, [4], "tanh").init_(rng)
    val_x = rng.randn(30, 3)
    val_y = teacher.module(val_x) + 0.3 * rng.randn(30, 1)  # noisy: not monotone in epochs
    strategy = STRATEGIES["random"](cfg.strategy, 3, None, rng)
    history, selected = student_loop.train_student(loop_settings(cfg), teacher, student, strategy,
                                                   (val_x, val_y))
    for k in range(2):
        val = [row["val_rmse"] for row in history[k]]
        assert selected[k] == min(range(12), key=val.__getitem__)
        final = (student(val_x) - val_y).pow(2).mean(dim=(1, 2)).sqrt()[k].detach()
        assert float(final) == pytest.approx(min(val), rel=1e-6)


def test_the_selected_weights_do_not_depend_on_the_order_they_are_used():
    """selection=all reports last, fidelity and val from one training: each selection's weights
    are its own whichever was put in the student before (the loop keeps the end of training's
    weights aside the first time `use` runs)."""
    cfg = make_config("distill", ["epochs=10", "steps_per_epoch=2", "selection=both",
                                  "log_every=1", "strategy=random", "optimizer.lr=0.05"])
    rng = Streams([0, 1], torch.device("cpu"))
    teacher = Teacher(mlp.StackedMLP(2, 3, [8], "tanh").init_(rng).requires_grad_(False), 3,
                      None, ["t", "t"])
    student = mlp.StackedMLP(2, 3, [4], "tanh").init_(rng)
    val_x = rng.randn(30, 3)
    val = (val_x, teacher.module(val_x) + 0.3 * rng.randn(30, 1))
    loop = student_loop.StudentLoop(loop_settings(cfg), teacher, student,
                                    STRATEGIES["random"](cfg.strategy, 3, None, rng), val)
    loop.run()
    weights = {}
    for order in (["last", "val"], ["val", "last"]):
        for selection in order:
            loop.use(selection)
            weights.setdefault(selection, [p.clone() for p in student.params])
            assert all(torch.equal(a, b) for a, b in zip(weights[selection], student.params))
    assert loop.selected_epochs("last") == [9, 9]
    assert not all(torch.equal(a, b) for a, b in zip(weights["last"], weights["val"]))


def test_stacked_mlp_matches_nn_sequential():
    rng = Streams([5, 6], torch.device("cpu"))
    stacked = mlp.StackedMLP(2, 4, [7, 3], "relu").init_(rng)
    x = torch.randn(2, 9, 4)
    for k in range(2):
        single = mlp.mlp(4, [7, 3], "relu")
        single.load_state_dict(stacked.member_state_dict(k))
        torch.testing.assert_close(single(x[k]), stacked(x)[k])
    again = mlp.StackedMLP.from_state_dicts([stacked.member_state_dict(k) for k in (0, 1)],
                                               "relu")
    torch.testing.assert_close(again(x), stacked(x))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_student_step_gradient_is_the_mixed_loss_gradient(alpha):
    """L_S = alpha mean_g (T-S)^2 + (1-alpha) mean_p (T-S)^2 per member, summed over members."""
    rng = Streams([0, 1], torch.device("cpu"))
    teacher = mlp.StackedMLP(2, 3, [9], "tanh").init_(rng).requires_grad_(False)
    student = mlp.StackedMLP(2, 3, [4], "tanh").init_(rng)
    n_g = 5 if alpha > 0 else 0
    x = rng.randn(n_g + (4 if alpha < 1 else 0), 3)
    squared = (teacher(x) - student(x)).pow(2).sum(2)
    loss = torch.zeros(2)
    if n_g:
        loss = loss + alpha * squared[:, :n_g].mean(1)
    if alpha < 1:
        loss = loss + (1 - alpha) * squared[:, n_g:].mean(1)
    expected = torch.autograd.grad(loss.sum(), list(student.parameters()))
    frozen = torch.optim.SGD(student.parameters(), lr=0.0)
    weights = student_loop.row_weights(n_g, x.shape[1] - n_g, alpha, x.device)
    loss_g, loss_p = student_loop.student_step(teacher(x), student, frozen, x, n_g, weights)
    torch.testing.assert_close(alpha * loss_g + (1 - alpha) * loss_p, loss.detach())
    for p, g in zip(student.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_an_interrupted_sweep_job_says_how_to_resume_the_sweep(tmp_path):
    """Issue 24, item 8: a job of an interrupted sweep logged the single-run resume command."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    assert distill.resume_hint(tmp_path) == f"continue with resume=true hydra.run.dir={tmp_path}"
    register_configs()
    with initialize_config_module(config_module="dfkd_cli.configs", version_base="1.3"):
        cfg = compose(config_name="distill", return_hydra_config=True,
                      overrides=[f"hydra.sweep.dir={tmp_path}", "hydra.mode=MULTIRUN"])
    assert cfg.hydra.mode == RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        hint = distill.resume_hint(tmp_path / "3")
    finally:
        HydraConfig.instance().cfg = None
    assert hint == ("continue the sweep with the same command (-m and its overrides) and "
                    f"resume=true hydra.sweep.dir={tmp_path}")
