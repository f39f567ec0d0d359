"""The property that defines each strategy, on a real (quickly trained) teacher."""

from __future__ import annotations

import pytest
import torch

from conftest import QUICK_TEACHER, make_config
from dfkd_cli import distill, models, teacher
from dfkd_cli.data import load_split
from dfkd_cli.rng import Streams
from dfkd_cli.strategies import STRATEGIES, batch_diagnostics
from dfkd_cli.strategies.bounded import Bounded

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained():
    """A friedman teacher and a student trained briefly on plain Gaussian samples."""
    torch.manual_seed(0)
    cfg = make_config("train_teacher", QUICK_TEACHER)
    split = load_split(cfg)
    module, _, _ = teacher.fit(cfg, split, CPU)
    stacked = models.StackedMLP.from_state_dicts([module.state_dict()], "tanh")
    stacked.requires_grad_(False)
    box = (split.x_train.min(0).values[None], split.x_train.max(0).values[None])
    tch = teacher.Teacher(stacked, split.input_dim, box, ["test"])
    dcfg = make_config("distill", ["strategy=random", "epochs=5", "alpha=constant",
                                   "alpha.value=0", "teacher.hidden=[64]"])
    rng = Streams([0], CPU)
    student = models.StackedMLP(1, split.input_dim, [50], "tanh").init_(rng)
    strategy = STRATEGIES["random"](dcfg.strategy, split.input_dim, box, rng)
    distill.train_student(dcfg, tch, student, strategy, None)
    return tch, student


def bounded(seed=0, **overrides):
    cfg = make_config("distill", [f"strategy.{k}={v}" for k, v in overrides.items()])
    return Bounded(cfg.strategy, 10, None, Streams([seed], CPU))


def test_bounded_raises_the_gap_and_stays_near_its_start(trained):
    tch, student = trained
    strategy = bounded()
    xs, starts, plain = [], [], []
    for _ in range(40):  # batches of the protocol's m = 50: the objective is a batch mean
        xs.append(strategy.sample(tch.module, student, 50))
        starts.append(strategy.start)
        plain.append(strategy.prior(50))
    x, start, plain = (torch.cat(t, dim=1) for t in (xs, starts, plain))
    ours = {k: float(v) for k, v in batch_diagnostics(tch.module, student, x, start,
                                                      None).items()}
    gauss = {k: float(v) for k, v in batch_diagnostics(tch.module, student, plain, None,
                                                       None).items()}
    assert ours["gap_mean"] > 3 * gauss["gap_mean"]
    # RMSprop moves each coordinate by about lr / sqrt(1 - rho) = 1 per step: K = 2 -> <= ~2
    assert ours["start_dist_max"] <= 2.0 + 1e-3
    assert ours["start_dist_mean"] > 1.0  # and it does use its budget


def test_bounded_step_is_torch_rmsprop(trained):
    """The written-out update equals torch.optim.RMSprop on x (lr 0.1, wd beta, fresh state)."""
    tch, student = trained
    ours = bounded(seed=2)
    cfg = ours.cfg
    x_ours = ours.sample(tch.module, student, 64)
    x = ours.start.clone().requires_grad_(True)
    opt = torch.optim.RMSprop([x], lr=cfg.lr, alpha=cfg.rho, weight_decay=cfg.beta)
    for _ in range(cfg.steps):
        s = student(x)
        loss = (-(tch.module(x) - s).pow(2).sum(2) + cfg.gamma * s.pow(2).sum(2)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(x_ours, x.detach(), atol=1e-5, rtol=1e-5)


def test_bounded_leaves_the_student_gradients_alone(trained):
    tch, student = trained
    student.zero_grad(set_to_none=True)
    bounded().sample(tch.module, student, 16)
    assert all(p.grad is None for p in student.parameters())


def test_zero_steps_is_plain_sampling(trained):
    tch, student = trained
    strategy = bounded(steps=0)
    x = strategy.sample(tch.module, student, 32)
    torch.testing.assert_close(x, strategy.start)


def test_random_is_standard_normal():
    cfg = make_config("distill", ["strategy=random"])
    x = STRATEGIES["random"](cfg.strategy, 4, None, Streams([3], CPU)).sample(None, None, 20000)
    assert x.shape == (1, 20000, 4)
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02
