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
from conftest import finish, make_config, small_population

from dfkd_cli.commands.records import loop_settings
from dfkd_cli.data import images
from dfkd_cli.loop.student_loop import StudentLoop
from dfkd_cli.nets import checkpoints
from dfkd_cli.strategies.registry import STRATEGIES

CPU = torch.device("cpu")
SEEDS = [3, 4, 5]
D = 4
QUICK = {"generator": ["strategy.hidden=[16]", "strategy.latent_dim=5", "strategy.steps=2"],
         "impressions": ["strategy.hidden=[16]", "strategy.latent_dim=5", "strategy.steps=15"],
         "evolution": ["strategy.generations=3", "strategy.coverage=0.5"],
         "bounded": ["strategy.radius=0.8", "strategy.clip_to_box=true"],
         "real_rows_targets": ["strategy=real_rows", "strategy.labels=targets"],
         # the image keys (issue 29) on 1 x 2 x 2 'images'
         "generator_conv": ["strategy=generator", "strategy.arch=conv", "strategy.channels=[3,2]",
                            "strategy.latent_dim=5", "strategy.steps=2"],
         "bounded_tv": ["strategy=bounded", "strategy.tv=2"],
         "bounded_shift": ["strategy=bounded", "shift=1"]}
CASES = sorted([*STRATEGIES, "real_rows_targets", "generator_conv", "bounded_tv",
                "bounded_shift"])
SHAPE = [1, 2, 2]  # D features as an image
ROWS = 40  # training rows per member, for the strategies that draw them


def training_rows(members: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's own training rows (x, y), stacked over the members chosen."""
    x = torch.stack([torch.randn(ROWS, D, generator=torch.Generator().manual_seed(50 + SEEDS[k]))
                     for k in members])
    return x, x.sum(dim=2, keepdim=True).sin()


def loop_for(name: str, members: list[int], extra=("log_every=1",),
             val=None) -> StudentLoop:
    # selection=last: these loops are built by hand, without a fidelity set
    base = ["epochs=4", "steps_per_epoch=2", "batch_size=6", "selection=last", *extra,
            *QUICK.get(name, [])]
    cfg = make_config("distill", [f"strategy={name}", *base] if name in STRATEGIES else base)
    teacher, rng, student = small_population(members, SEEDS, D)
    box = teacher.box
    cls = STRATEGIES[cfg.strategy.name]
    extra = {"rows": training_rows(members)} if cls.Config.needs_rows else {}
    # each member its own pixel scales, so a view that mixed members up would show
    scales = torch.tensor([[0.1 * SEEDS[k]] * D for k in members])
    view = images.ImageView(SHAPE, scales, 1 + scales)
    if cls.Config.needs_image(cfg.strategy):
        extra["image"] = view
    strategy = cls(cfg.strategy, D, box, rng, **extra)
    augment = images.RandomShift(view, cfg.shift, rng, box) if cfg.shift else None
    return StudentLoop(loop_settings(cfg), teacher, student, strategy, val, augment=augment)


def distil(name: str, members: list[int]):
    loop = loop_for(name, members)
    loop.run()
    x = loop.strategy.sample(loop.teacher.module, loop.student, 6)
    return loop.history, loop.student, x


@pytest.mark.parametrize("name", CASES)
def test_population_member_equals_its_own_run(name):
    history, student, x = distil(name, [0, 1, 2])
    for k in range(3):
        alone_history, alone_student, alone_x = distil(name, [k])
        assert len(history[k]) == len(alone_history[0]) == 4
        for row, alone in zip(history[k], alone_history[0]):
            assert row == pytest.approx(alone, rel=1e-4, abs=1e-6)
        for p, q in zip(student.parameters(), alone_student.parameters()):
            torch.testing.assert_close(p[k], q[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(x[k], alone_x[0], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(x[0], x[1])  # and the members differ


@pytest.mark.parametrize("name", CASES)
def test_resumed_run_continues_the_same_run(name, tmp_path):
    """Stopped after epoch 1 of 4 with log_every=2: half a log interval's loss sums are in the
    saved state, and the resumed run must end bit for bit as the straight one."""
    g = torch.Generator().manual_seed(0)
    val = (torch.randn(2, 8, D, generator=g), torch.randn(2, 8, 1, generator=g))
    extra = ["log_every=2", "selection=both"]  # the best-epoch snapshot is resumed too
    straight = loop_for(name, [0, 1], extra, val)
    straight.run()
    first = loop_for(name, [0, 1], extra, val)
    first.run(should_stop=lambda: True)  # stop after the first epoch, between log rows
    assert first.epoch == 1 and first.steps_logged == 2 and not first.history[0]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = loop_for(name, [0, 1], extra, val)
    resumed.load_state_dict(checkpoints.load_weights_only(tmp_path / "state.pt"))
    resumed.run()
    assert len(resumed.history[0]) == 2
    assert resumed.history == straight.history
    for selection in ("last", "val"):
        assert finish(resumed, selection) == finish(straight, selection)
        for p, q in zip(resumed.student.parameters(), straight.student.parameters()):
            assert torch.equal(p, q)


def poisoned(name: str, on_nonfinite: str, poison: bool = True, at: int = 2) -> StudentLoop:
    """A population of two run for `at` of 4 epochs, member 0's weights then made NaN (unless
    `poison` is false), and run to the end."""
    loop = loop_for(name, [0, 1], ["log_every=1", f"on_nonfinite={on_nonfinite}"])
    if at:
        loop.run(should_stop=lambda: loop.epoch == at)
    if poison:
        with torch.no_grad():
            loop.student.weights[0][0, 0, 0] = float("nan")
    loop.run()
    return loop


@pytest.mark.parametrize("name", ["random", "bounded"])
def test_a_diverged_member_stops_alone(name):
    """on_nonfinite=stop: member 0 goes non-finite at epoch 2 and is marked diverged with its
    epoch-1 weights; member 1 trains on to the end exactly as if nothing had happened."""
    loop, clean = poisoned(name, "stop"), poisoned(name, "stop", poison=False)
    assert loop.status() == ["diverged", "ok"] and loop.diverged_epoch.tolist() == [2, -1]
    assert loop.epoch == 4 and len(loop.history[1]) == 4
    assert loop.history[1] == clean.history[1] and loop.history[0][:2] == clean.history[0][:2]
    assert loop.history[0][2]["nonfinite"] == 1.0
    finish(loop, "last")
    finish(clean, "last")
    for p, q in zip(loop.student.parameters(), clean.student.parameters()):
        assert torch.equal(p[1], q[1])
        assert bool(torch.isfinite(p[0]).all())


def test_a_member_diverging_at_the_first_log_row_is_caught():
    """Epoch 0 is a divergence epoch like any other: reported, and rolled back to the initial
    weights (the last finite ones)."""
    loop = poisoned("random", "stop", at=0)
    assert loop.status() == ["diverged", "ok"] and loop.diverged_epoch.tolist() == [0, -1]
    finish(loop, "last")
    assert all(bool(torch.isfinite(p[0]).all()) for p in loop.student.parameters())


def rmsprop_state(loop: StudentLoop, member: int) -> list[torch.Tensor]:
    return [loop.opt.state[p]["square_avg"][member] for p in loop.student.parameters()]


def test_nonfinite_skip_rolls_back_one_member_and_resets_its_optimiser():
    """on_nonfinite=skip: the member's weights go back to the last finite log point, its RMSprop
    averages to zero (else the NaN in them would poison every later step), and it trains on."""
    loop = loop_for("random", [0, 1], ["log_every=1", "on_nonfinite=skip"])
    loop.run(should_stop=lambda: loop.epoch == 2)
    finite = [p[0].clone() for p in loop.student.parameters()]
    with torch.no_grad():
        loop.student.weights[0][0, 0, 0] = float("nan")
    loop.run(should_stop=lambda: loop.epoch == 3)  # epoch 2 goes non-finite and is rolled back
    assert loop.skips.tolist() == [1, 0]
    for p, kept in zip(loop.student.parameters(), finite):
        assert torch.equal(p[0], kept)
    assert all(bool((s == 0).all()) for s in rmsprop_state(loop, 0))
    assert all(bool((s > 0).any()) for s in rmsprop_state(loop, 1))
    loop.run()  # and it carries on: finite, no further skip
    assert loop.skips.tolist() == [1, 0] and loop.status() == ["ok", "ok"] and loop.epoch == 4
    assert all(bool(torch.isfinite(p).all()) for p in loop.student.parameters())


def test_prepare_diagnostics_join_the_first_history_row():
    history, _, _ = distil("impressions", [0, 1])
    for rows in history:
        assert {"impressions_fit", "impressions_kl"} <= set(rows[0])
        assert not {"impressions_fit", "impressions_kl"} & set(rows[1])
