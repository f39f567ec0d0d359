"""stop=plateau (loop/stopping.py): each member stops alone when its fidelity on the fixed
synthetic set has stopped improving, frozen while the others train, so a population ends as
its members run alone; a resumed run continues the rule bit for bit; stop=off is the loop
as it was before the rule existed (in-process, fast)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import QUICK_DISTILL, finish, make_config, small_population

from dfkd_cli.commands import distill
from dfkd_cli.commands.records import loop_settings
from dfkd_cli.config import DistillConfig
from dfkd_cli.errors import UserError
from dfkd_cli.loop.stopping import reasons
from dfkd_cli.loop.student_loop import StudentLoop
from dfkd_cli.nets import checkpoints
from dfkd_cli.strategies.registry import STRATEGIES

CPU = torch.device("cpu")
SEEDS = [3, 4, 5]
D = 4
# alpha settles at epoch 2 (its horizon of 3); members 0 and 1 plateau after it (at epochs 10
# and 12) before the cap, member 2 runs to it (16)
PLATEAU = ["stop=plateau", "stop_patience=3", "stop_tolerance=0.002", "alpha.horizon=3"]


def loop_for(members: list[int], extra=(), name: str = "bounded") -> StudentLoop:
    """A population of the given members with a fixed synthetic set of 64 rows each."""
    cfg = make_config("distill", [f"strategy={name}", "epochs=16", "steps_per_epoch=2",
                                  "batch_size=6", "log_every=1", "selection=fidelity",
                                  "optimizer.lr=0.01", "prior=gaussian", *extra])
    teacher, rng, student = small_population(members, SEEDS, D)
    strategy = STRATEGIES[name](cfg.strategy, D, teacher.box, rng)
    x = torch.stack([torch.randn(64, D, generator=torch.Generator().manual_seed(70 + SEEDS[k]))
                     for k in members])
    with torch.no_grad():
        fidelity = (x, teacher.module(x))
    return StudentLoop(loop_settings(cfg), teacher, student, strategy, None, fidelity)


def ran(members: list[int], extra=()) -> StudentLoop:
    loop = loop_for(members, extra)
    loop.run()
    return loop


def test_a_plateaued_member_stops_alone_and_equals_its_own_run():
    population = ran([0, 1, 2], PLATEAU)
    stopped = population.plateau.epoch.tolist()
    assert stopped == [10, 12, -1], stopped
    assert population.epoch == 16
    alone = [ran([k], PLATEAU) for k in range(3)]
    for k, single in enumerate(alone):
        assert single.plateau.epoch.tolist() == [stopped[k]]
        assert single.epoch == (16 if stopped[k] < 0 else stopped[k] + 1)
        assert len(population.history[k]) == len(single.history[0]) == single.epoch
        for row, own in zip(population.history[k], single.history[0]):
            assert row == pytest.approx(own, rel=1e-4, abs=1e-6)
    for k in (0, 1):  # the optimiser state of a stopped member is frozen too
        for p, q in zip(population.student.parameters(), alone[k].student.parameters()):
            torch.testing.assert_close(population.opt.state[p]["square_avg"][k],
                                       alone[k].opt.state[q]["square_avg"][0],
                                       rtol=1e-4, atol=1e-8)
    for selection in ("last", "fidelity"):  # last first: finish() overwrites the weights
        epochs = finish(population, selection)
        for k, single in enumerate(alone):
            assert epochs[k] == finish(single, selection)[0]
            for p, q in zip(population.student.parameters(), single.student.parameters()):
                torch.testing.assert_close(p[k], q[0], rtol=1e-4, atol=1e-6)


def test_resume_mid_plateau_is_bit_for_bit(tmp_path):
    """Stopped after epoch 10 (epoch == 11): member 0 has stopped there, member 1 has gone a
    log point without an improvement (it stops at 12); the resumed run ends as the straight
    one, counters, weights and all."""
    straight = ran([0, 1, 2], PLATEAU)
    first = loop_for([0, 1, 2], PLATEAU)
    first.run(should_stop=lambda: first.epoch == 11)
    assert first.plateau.epoch.tolist() == [10, -1, -1] and first.plateau.wait.tolist()[1] == 1
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = loop_for([0, 1, 2], PLATEAU)
    resumed.load_state_dict(checkpoints.load_weights_only(tmp_path / "state.pt"))
    resumed.run()
    assert resumed.history == straight.history
    for a, b in zip(resumed.plateau.state_dict().values(), straight.plateau.state_dict().values()):
        assert torch.equal(a, b)
    for selection in ("last", "fidelity"):
        assert finish(resumed, selection) == finish(straight, selection)
        for p, q in zip(resumed.student.parameters(), straight.student.parameters()):
            assert torch.equal(p, q)


# stop=off: the history and weights of main's code (commit e2492cc) for this population,
# computed once before the rule existed
MAIN_LOSS = [0.0011537526734173298, 0.00267279171384871]
MAIN_FIDELITY = [0.03271713852882385, 0.05675126239657402]
MAIN_WEIGHTS = [7.266835805028677, 7.524749703705311]


def test_stop_off_is_the_loop_before_the_rule():
    off = ran([0, 1], ["stop=off"])
    assert [rows[-1]["loss"] for rows in off.history] == pytest.approx(MAIN_LOSS, rel=1e-6)
    assert ([rows[-1]["synthetic_fidelity_rmse"] for rows in off.history]
            == pytest.approx(MAIN_FIDELITY, rel=1e-6))
    sums = [sum(float(p[k].detach().abs().sum()) for p in off.student.parameters())
            for k in range(2)]
    assert sums == pytest.approx(MAIN_WEIGHTS, rel=1e-6)
    patient = ran([0, 1], ["stop=plateau", "stop_patience=1000000"])
    assert patient.history == off.history
    for p, q in zip(patient.student.parameters(), off.student.parameters()):
        assert torch.equal(p, q)


def test_no_member_stops_while_alpha_still_moves():
    """A plateau counts only once alpha has settled: with patience 1 and a tolerance no
    improvement meets, every member stops at the first log point after its horizon (epoch 5
    for alpha.horizon=6), and with the paper's schedule over E (no horizon) none stops early."""
    eager = ["stop=plateau", "stop_patience=1", "stop_tolerance=0.9"]
    assert ran([0, 1, 2], [*eager, "alpha.horizon=6"]).plateau.epoch.tolist() == [6, 6, 6]
    paper = ran([0, 1, 2], eager)
    assert paper.plateau.epoch.tolist() == [-1, -1, -1] and paper.epoch == 16
    constant = ran([0, 1, 2], [*eager, "alpha=constant", "alpha.value=0.5"])
    assert constant.plateau.epoch.tolist() == [1, 1, 1]  # a constant alpha is settled at once


def test_reasons_and_checks():
    assert reasons([3, -1, -1], [-1, -1, 2], 15, False, True) == [
        {"stopped_epoch": 3, "stop_reason": "plateau"},
        {"stopped_epoch": 15, "stop_reason": "cap"},
        {"stopped_epoch": None, "stop_reason": None}]
    assert reasons([3], [-1], 15, True, True) == [{"stopped_epoch": None, "stop_reason": None}]
    paper = make_config("distill", ["experiment=paper"])
    assert paper.stop == "off"  # the paper's protocol runs its E epochs whatever the default
    for bad, key in (("stop=early", "stop="), ("stop_patience=0", "stop_patience="),
                     ("stop_tolerance=1", "stop_tolerance=")):
        with pytest.raises(UserError, match=key):
            DistillConfig.check(make_config("distill", [bad]))


def test_distill_writes_where_each_member_stopped_and_why(workdir, tmp_path):
    """A run of `dfkd distill` with stop=plateau and selection=last (the fixed set is drawn for
    the rule anyway): metrics.csv says the epoch the member stopped at and why."""
    cfg = make_config("distill", ["stop=plateau", "stop_patience=1", "stop_tolerance=0.9",
                                  "alpha.horizon=1", "selection=last", *QUICK_DISTILL, "log_every=1",
                                  f"teacher_store={workdir}/outputs/teachers", "progress=false"])
    row = distill.run(cfg, tmp_path).iloc[0]
    assert row.stop_reason == "plateau" and row.stopped_epoch == 1  # its first log point
    assert row.epochs_run == 2 and row.selected_epoch == 1 and row.status == "ok"
    off = distill.run(make_config("distill", [*QUICK_DISTILL, "progress=false",
                                              f"teacher_store={workdir}/outputs/teachers"]),
                      tmp_path / "off").iloc[0]
    assert pd.isna(off.stop_reason) and off.epochs_run == 6
