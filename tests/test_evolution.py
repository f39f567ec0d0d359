"""strategy=evolution's options: DE/best/2/bin, populations of `starts`, the batch of results plus
starts, the objective's weights and the target range in raw units (the protein case study)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_config

from dfkd_cli.config import validate
from dfkd_cli.errors import UserError
from dfkd_cli.strategies.evolution import draw_generations, mutants
from dfkd_cli.strategies.registry import STRATEGIES
from dfkd_cli.utils.rng import Streams

CPU = torch.device("cpu")
D = 6
BOX = (torch.full((1, D), -3.0), torch.full((1, D), 3.0))
_W = torch.randn(D, 1, generator=torch.Generator().manual_seed(1))
_V = torch.randn(D, 1, generator=torch.Generator().manual_seed(2))


def teacher(x):
    return torch.tanh(x @ _W) + 0.3 * x[..., :1] ** 2


def student(x):
    return 0.5 * torch.tanh(x @ _V)


def evolution(*overrides, seed=0):
    cfg = make_config("distill", ["strategy=evolution", *overrides])
    return STRATEGIES["evolution"](cfg.strategy, D, BOX, Streams([seed], CPU))


PAPER = ["strategy.variant=best2bin", "strategy.starts=5", "strategy.include_starts=true",
         "strategy.disagreement=0.05", "strategy.coverage=1"]


def partners(rng, groups, size, count, generations=1):
    return draw_generations(rng, generations, groups, size, 2, count, 0.5,
                            torch.eye(size) * 2)[0]


def crossover(rng, groups, size, d, cr, generations=1):
    return draw_generations(rng, generations, groups, size, d, 2, cr, torch.eye(size) * 2)[1]


def test_best2_partners_are_four_distinct_others():
    rng = Streams([0], CPU)
    for generation in partners(rng, 3, 5, 4, generations=50)[0]:  # (groups, s, 4) each
        for group in generation:
            for i, row in enumerate(group.tolist()):
                assert sorted(row) == [j for j in range(5) if j != i]
    # larger populations: distinct, never i, and every other individual gets drawn
    seen = set()
    for generation in partners(rng, 1, 9, 4, generations=200)[0]:
        for i, row in enumerate(generation[0].tolist()):
            assert len(set(row)) == 4 and i not in row
            seen.update((i, j) for j in row)
    assert len(seen) == 9 * 8


def test_mutants_are_best_plus_two_scaled_differences():
    x = torch.randn(1, 2, 5, 3)
    fit = torch.tensor([[[0.0, 3.0, 1.0, 2.0, 0.5], [4.0, 0.0, 1.0, 2.0, 0.5]]])
    partners = torch.tensor([[[[1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 3, 4], [4, 2, 1, 0],
                               [3, 2, 1, 0]]] * 2])
    got = mutants(x, fit, partners, 0.5)
    for g, best in ((0, 1), (1, 0)):
        for i in range(5):
            a, b, c, d = (x[0, g, j] for j in partners[0, g, i])
            torch.testing.assert_close(got[0, g, i], x[0, g, best] + 0.5 * (a - b) + 0.5 * (c - d))
    one = mutants(x, fit, partners[..., :2], 0.5)  # best/1: the first pair only
    torch.testing.assert_close(one[0, 0, 0], x[0, 0, 1] + 0.5 * (x[0, 0, 1] - x[0, 0, 2]))


def test_crossover_forces_one_coordinate():
    rng = Streams([0], CPU)
    never = crossover(rng, 4, 5, 7, 0.0)
    assert bool((never.sum(4) == 1).all())  # CR = 0: exactly the forced coordinate
    assert bool(crossover(rng, 4, 5, 7, 1.0).all())
    forced_where = crossover(rng, 1, 5, 7, 0.0, generations=100).int().argmax(4)
    assert set(forced_where.flatten().tolist()) == set(range(7))  # any coordinate


def test_all_generations_drawn_at_once_are_the_draws_generation_by_generation():
    """One draw per step gives the numbers G draws per step gave (CPU streams): a DE sample is
    the same as drawing each generation's partners and crossover when it runs."""
    def by_generation(evo, n):
        groups, size = evo.layout(n)
        start = evo.clamp_to_box(evo.prior(groups * size))
        r = evo.draw_targets(groups, size)
        x, fit = start, evo.objective(teacher, student, start, r)
        for _ in range(evo.generations):
            u = evo.rng.rand(groups * size * (size + 2 * D))
            pick, cross = groups * size * size, groups * size * D
            near = (u[:, :pick].view(1, groups, size, size) + torch.eye(size) * 2).argsort(3)
            mask = (u[:, pick:pick + cross].view(1, groups, size, D) < evo.cr).scatter_(
                3, u[:, pick + cross:].view(1, groups, size, D).argmax(3, keepdim=True), True)
            pop = x.view(1, groups, size, D)
            mutant = mutants(pop, fit.view(1, groups, size), near[..., :2 * evo.pairs], evo.f)
            trial = evo.clamp_to_box(torch.where(mask, mutant, pop).view(1, -1, D))
            trial_fit = evo.objective(teacher, student, trial, r)
            x = torch.where((trial_fit >= fit).unsqueeze(2), trial, x)
            fit = torch.maximum(trial_fit, fit)
        return torch.cat([x, start], 1) if evo.config.include_starts else x

    for overrides in ([], [*PAPER, "strategy.generations=25"]):
        ours, theirs = evolution(*overrides, seed=4), evolution(*overrides, seed=4)
        for n in (10, 20):
            assert torch.equal(ours.sample(teacher, student, n), by_generation(theirs, n))


def test_case_study_batch_is_results_then_their_starts():
    evo = evolution(*PAPER, "strategy.generations=25")
    x = evo.sample(teacher, student, 20)  # two populations of 5, then their 10 starts
    assert x.shape == (1, 20, D)
    prior = evolution(*PAPER).clamp_to_box(Streams([0], CPU).randn(10, D))
    torch.testing.assert_close(x[:, 10:], prior)  # the starts are the clamped Gaussians
    torch.testing.assert_close(evo.start, torch.cat([prior, prior], 1))
    assert not torch.equal(x[:, :10], prior)
    f_start = evo.objective(teacher, student, prior, evo.targets)
    f_end = evo.objective(teacher, student, x[:, :10], evo.targets)
    assert bool((f_end >= f_start).all())
    low, high = BOX
    assert bool(((x >= low) & (x <= high)).all())


def test_objective_improves_over_generations_best2bin():
    ends = []
    for generations in (0, 5, 25):
        evo = evolution(*PAPER, f"strategy.generations={generations}", seed=3)
        x = evo.sample(teacher, student, 40)
        ends.append(evo.objective(teacher, student, x[:, :20], evo.targets))
    # the same draws: the 25-generation run passes through the 5-generation one, and selection
    # never loses an individual's fitness (the case study's minimised objective is -f)
    assert bool((ends[1] >= ends[0]).all()) and bool((ends[2] >= ends[1]).all())
    assert float(ends[2].mean()) > float(ends[1].mean()) > float(ends[0].mean())


def test_raw_targets_use_the_teachers_output_scale_and_one_r_per_population():
    evo = evolution(*PAPER, "strategy.target_low=0", "strategy.target_high=1",
                    "strategy.target_units=raw", "strategy.shared_target=true")
    evo.y_scale = (torch.tensor([[0.48]]), torch.tensor([[0.32]]))
    evo.sample(teacher, student, 30)
    raw = evo.targets * 0.32 + 0.48  # back to the teacher's units
    assert raw.shape == (1, 15, 1) and bool(((raw >= 0) & (raw <= 1)).all())
    per_population = raw.view(3, 5)
    assert bool((per_population == per_population[:, :1]).all())
    assert per_population[:, 0].unique().numel() == 3
    unscaled = evolution(*PAPER, "strategy.target_units=raw")
    with pytest.raises(UserError, match="output scaler"):
        unscaled.sample(teacher, student, 10)


def test_coverage_pulls_teacher_outputs_to_their_targets():
    def miss(weight):
        evo = evolution("strategy.variant=best2bin", "strategy.starts=5", "strategy.generations=25",
                        "strategy.disagreement=0.05", f"strategy.coverage={weight}",
                        "strategy.target_low=-1", "strategy.target_high=1")
        x = evo.sample(teacher, student, 200)
        return float((teacher(x) - evo.targets).pow(2).mean())
    assert miss(1.0) < 0.3 * miss(1e-9)  # the same targets drawn, one weighed, one not


def test_layout_and_checks_refuse_what_de_cannot_do():
    with pytest.raises(UserError, match="strategy.starts=4 is not valid"):
        validate(make_config("distill", ["strategy=evolution", "strategy.variant=best2bin",
                                         "strategy.starts=4"]))
    with pytest.raises(UserError, match="strategy.variant='best3bin' is not valid"):
        validate(make_config("distill", ["strategy=evolution", "strategy.variant=best3bin"]))
    with pytest.raises(UserError, match="strategy.target_units='z' is not valid"):
        validate(make_config("distill", ["strategy=evolution", "strategy.target_units=z"]))
    with pytest.raises(UserError, match="batch of 15 .* plus their starts"):
        evolution(*PAPER).sample(teacher, student, 15)
    with pytest.raises(UserError, match="at least 5"):
        evolution("strategy.variant=best2bin").sample(teacher, student, 4)
