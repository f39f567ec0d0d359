"""Every strategy in a population of K gives what its K separate runs give, and a run resumed
from a checkpoint gives what the uninterrupted run gives (in-process, fast).

The student loop, the teacher and the student are stacked over members; each strategy must draw
only through its member streams and keep members apart in its own state (generator weights and
optimiser, Sobol engines, DE populations), so member k of `seeds=[...]` equals the run `seed=k`;
and its state_dict must hold all of that state, in a form torch.load(weights_only=True) reads.
"""

from __future__ import annotations

import pytest
import torch

from conftest import make_config
from dfkd_cli import models
from dfkd_cli.rng import Streams
from dfkd_cli.strategies import STRATEGIES
from dfkd_cli.student_loop import StudentLoop
from dfkd_cli.teacher import Teacher

CPU = torch.device("cpu")
SEEDS = [3, 4, 5]
D = 4
QUICK = {"generator": ["strategy.hidden=[16]", "strategy.latent_dim=5", "strategy.steps=2"],
         "impressions": ["strategy.hidden=[16]", "strategy.latent_dim=5", "strategy.steps=15"],
         "evolution": ["strategy.generations=3", "strategy.coverage=0.5"],
         "bounded": ["strategy.radius=0.8", "strategy.clip_to_box=true"],
         "real_rows_targets": ["strategy=real_rows", "strategy.labels=targets"]}
CASES = sorted([*STRATEGIES, "real_rows_targets"])
ROWS = 40  # training rows per member, for the strategies that draw them


def training_rows(members: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's own training rows (x, y), stacked over the members chosen."""
    x = torch.stack([torch.randn(ROWS, D, generator=torch.Generator().manual_seed(50 + SEEDS[k]))
                     for k in members])
    return x, x.sum(dim=2, keepdim=True).sin()


def teachers():
    """One small random teacher and feature box per seed (members differ in both)."""
    states, boxes = [], []
    for seed in SEEDS:
        net = models.StackedMLP(1, D, [12], "tanh").init_(Streams([100 + seed], CPU))
        states.append(net.member_state_dict(0))
        low = -1.5 - torch.rand(D, generator=torch.Generator().manual_seed(seed))
        boxes.append((low, low + 3.0))
    return states, boxes


def loop_for(name: str, members: list[int], states, boxes) -> StudentLoop:
    overrides = QUICK.get(name, [])
    cfg = make_config("distill", [f"strategy={name}", "epochs=4", "steps_per_epoch=2",
                                  "batch_size=6", "log_every=1", *overrides]
                      if name in STRATEGIES else ["epochs=4", "steps_per_epoch=2", "batch_size=6",
                                                  "log_every=1", *overrides])
    module = models.StackedMLP.from_state_dicts([states[k] for k in members], "tanh")
    box = (torch.stack([boxes[k][0] for k in members]),
           torch.stack([boxes[k][1] for k in members]))
    teacher = Teacher(module.requires_grad_(False), D, box, ["t"] * len(members))
    rng = Streams([SEEDS[k] for k in members], CPU)
    student = models.StackedMLP(len(members), D, [5], "tanh").init_(rng)
    cls = STRATEGIES[cfg.strategy.name]
    rows = {"rows": training_rows(members)} if cls.needs_rows else {}
    strategy = cls(cfg.strategy, D, box, rng, **rows)
    return StudentLoop(cfg, teacher, student, strategy, None)


def distil(name: str, members: list[int], states, boxes):
    loop = loop_for(name, members, states, boxes)
    loop.run()
    x = loop.strategy.sample(loop.teacher.module, loop.student, 6)
    return loop.history, loop.student, x


@pytest.mark.parametrize("name", CASES)
def test_population_member_equals_its_own_run(name):
    states, boxes = teachers()
    history, student, x = distil(name, [0, 1, 2], states, boxes)
    for k in range(3):
        alone_history, alone_student, alone_x = distil(name, [k], states, boxes)
        assert len(history[k]) == len(alone_history[0]) == 4
        for row, alone in zip(history[k], alone_history[0]):
            assert row == pytest.approx(alone, rel=1e-4, abs=1e-6)
        for p, q in zip(student.parameters(), alone_student.parameters()):
            torch.testing.assert_close(p[k], q[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(x[k], alone_x[0], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(x[0], x[1])  # and the members differ


@pytest.mark.parametrize("name", CASES)
def test_resumed_run_continues_the_same_run(name, tmp_path):
    states, boxes = teachers()
    straight = loop_for(name, [0, 1], states, boxes)
    straight.run()
    first = loop_for(name, [0, 1], states, boxes)
    epochs = iter(range(100))
    first.run(should_stop=lambda: next(epochs) == 1)  # stop after two of the four epochs
    assert first.epoch == 2
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = loop_for(name, [0, 1], states, boxes)
    resumed.load_state_dict(models.load_weights_only(tmp_path / "state.pt"))
    resumed.run()
    assert len(resumed.history[0]) == 4
    for a, b in zip(resumed.history, straight.history):
        for row, expected in zip(a, b):
            assert row == pytest.approx(expected, rel=1e-5, abs=1e-7)
    for p, q in zip(resumed.student.parameters(), straight.student.parameters()):
        torch.testing.assert_close(p, q)


def test_prepare_diagnostics_join_the_first_history_row():
    states, boxes = teachers()
    history, _, _ = distil("impressions", [0, 1], states, boxes)
    for rows in history:
        assert {"impressions_fit", "impressions_kl"} <= set(rows[0])
        assert not {"impressions_fit", "impressions_kl"} & set(rows[1])
