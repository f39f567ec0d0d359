"""Properties that define a feature, checked on inputs hypothesis draws (seeds, sizes, boxes):
every strategy's samples stay in their box / bound, differential evolution's mutant is built
from two distinct partners other than the individual with at least one crossed coordinate, a
population member equals its run alone, and an export computes what its checkpoint computes.
max_examples stays small: each property runs in seconds."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import make_config
from hypothesis import given, settings
from hypothesis import strategies as st

from dfkd_cli.commands import export
from dfkd_cli.commands.records import loop_settings
from dfkd_cli.nets import checkpoints, mlp
from dfkd_cli.nets.activations import ACTIVATIONS
from dfkd_cli.strategies.registry import STRATEGIES
from dfkd_cli.utils.rng import Streams

CPU = torch.device("cpu")
FEW = settings(max_examples=12, deadline=None)

seeds = st.integers(0, 2 ** 31 - 1)
dims = st.integers(1, 5)


def nets(seed: int, members: int, d: int) -> tuple[mlp.StackedMLP, mlp.StackedMLP]:
    """A random teacher and student of `members` members on d inputs."""
    rng = Streams([seed + k for k in range(members)], CPU)
    teacher = mlp.StackedMLP(members, d, [7], "tanh").init_(rng).requires_grad_(False)
    return teacher, mlp.StackedMLP(members, d, [5], "tanh").init_(rng)


def box_of(seed: int, members: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member boxes of random position and width, some far from the N(0, I) prior."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(members, d, generator=g) * 2
    return low, low + 0.05 + 3 * torch.rand(members, d, generator=g)


def build(name: str, d: int, box, seed: int, members: int, overrides=()):
    cfg = make_config("distill", [f"strategy={name}", *overrides])
    return STRATEGIES[name](cfg.strategy, d, box, Streams([seed + k for k in range(members)], CPU))


def inside(x, low, high) -> bool:
    return bool(((x >= low.unsqueeze(1)) & (x <= high.unsqueeze(1))).all())


@pytest.mark.parametrize("name,overrides", [
    ("uniform", []), ("lhs", []), ("sobol", []), ("evolution", ["strategy.generations=2"]),
    ("bounded", ["strategy.clip_to_box=true"])])
@FEW
@given(seed=seeds, members=st.integers(1, 3), d=dims, n=st.integers(3, 40))
def test_box_strategies_sample_inside_each_members_box(name, overrides, seed, members, d, n):
    box = box_of(seed, members, d)
    teacher, student = nets(seed, members, d)
    x = build(name, d, box, seed, members, overrides).sample(teacher, student, n)
    assert x.shape == (members, n, d) and inside(x, *box)


@FEW
@given(seed=seeds, members=st.integers(1, 3), d=dims, n=st.integers(1, 40),
       radius=st.floats(0.01, 3.0), clip=st.booleans())
def test_bounded_stays_in_its_ball_and_box(seed, members, d, n, radius, clip):
    """radius r: |x - X0|_inf <= r. With clip_to_box too: x in the box, and in the intersection
    of ball and box wherever they meet; where the start lies more than r outside the box, x is
    the box's nearest bound."""
    box = box_of(seed, members, d)
    teacher, student = nets(seed, members, d)
    overrides = [f"strategy.radius={radius}", f"strategy.clip_to_box={str(clip).lower()}"]
    strategy = build("bounded", d, box, seed, members, overrides)
    x = strategy.sample(teacher, student, n)
    start, eps = strategy.start, 1e-5
    if not clip:
        assert float((x - start).abs().max()) <= radius + eps
        return
    low, high = box[0].unsqueeze(1), box[1].unsqueeze(1)
    assert inside(x, *box)
    lo, hi = torch.maximum(low, start - radius), torch.minimum(high, start + radius)
    meet = lo <= hi
    assert bool(((x >= lo - eps) & (x <= hi + eps))[meet].all())
    nearest = torch.where(start + radius < low, low, high).expand_as(x)
    assert torch.equal(x[~meet], nearest[~meet])


def constant(x: torch.Tensor) -> torch.Tensor:
    """A network whose output never changes: every trial ties and is kept."""
    return x.new_zeros(x.shape[0], x.shape[1], 1)


@FEW
@given(seed=seeds, d=dims, n=st.integers(3, 6), mutation=st.floats(0.1, 2.0))
def test_evolution_mutant_uses_two_distinct_partners_other_than_itself(seed, d, n, mutation):
    """With crossover 1 and a constant objective (every trial kept), each individual after one
    generation is x_b + F (x_r1 - x_r2) for some b and r1 != r2, both != i (DE/best/1)."""
    box = (torch.full((1, d), -1e6), torch.full((1, d), 1e6))
    evo = build("evolution", d, box, seed, 1, ["strategy.generations=1",
                                                f"strategy.mutation={mutation}",
                                                "strategy.crossover=1"])
    x = evo.sample(constant, constant, n)[0]
    start = evo.start[0]
    for i in range(n):
        others = [j for j in range(n) if j != i]
        assert any(torch.equal(x[i], start[b] + evo.f * (start[r1] - start[r2]))
                   for b in range(n) for r1, r2 in itertools.permutations(others, 2)), i


@FEW
@given(seed=seeds, d=st.integers(2, 6), n=st.integers(3, 30))
def test_evolution_crosses_at_least_one_coordinate(seed, d, n):
    """Crossover 0: each trial takes exactly its forced coordinate from the mutant."""
    box = (torch.full((1, d), -1e6), torch.full((1, d), 1e6))
    evo = build("evolution", d, box, seed, 1, ["strategy.generations=1", "strategy.crossover=0"])
    x = evo.sample(constant, constant, n)
    changed = (x != evo.start).sum(dim=2)
    assert bool((changed <= 1).all()) and bool((changed == 1).any())


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(sorted(n for n, c in STRATEGIES.items() if not c.Config.needs_rows)),
       seeds_=st.lists(seeds, min_size=2, max_size=3, unique=True),
       d=st.integers(2, 4))
def test_population_member_equals_its_run_alone(name, seeds_, d):
    """Member k of a population runs as the run with seed k alone (at float32 rounding: the
    vectorised sigmoid's tail, tests/test_population.py)."""
    from dfkd_cli.loop.student_loop import StudentLoop
    from dfkd_cli.teachers.loader import Teacher
    quick = {"generator": ["strategy.hidden=[8]", "strategy.latent_dim=3"],
             "impressions": ["strategy.hidden=[8]", "strategy.latent_dim=3", "strategy.steps=5"],
             "evolution": ["strategy.generations=2"]}
    cfg = make_config("distill", [f"strategy={name}", "epochs=3", "steps_per_epoch=2",
                                  "batch_size=5", "log_every=1", "selection=last",
                                  *quick.get(name, [])])
    states = [mlp.StackedMLP(1, d, [6], "tanh").init_(Streams([s + 1], CPU))
              .member_state_dict(0) for s in seeds_]
    boxes = [box_of(s, 1, d) for s in seeds_]

    def run(members: list[int]) -> StudentLoop:
        box = tuple(torch.cat([boxes[k][i] for k in members]) for i in (0, 1))
        module = mlp.StackedMLP.from_state_dicts([states[k] for k in members], "tanh")
        teacher = Teacher(module.requires_grad_(False), d, box, ["t"] * len(members))
        rng = Streams([seeds_[k] for k in members], CPU)
        student = mlp.StackedMLP(len(members), d, [4], "tanh").init_(rng)
        loop = StudentLoop(loop_settings(cfg), teacher, student, STRATEGIES[name](cfg.strategy, d, box, rng),
                           None)
        loop.run()
        return loop

    population = run(list(range(len(seeds_))))
    for k in range(len(seeds_)):
        alone = run([k])
        for row, expected in zip(population.history[k], alone.history[0], strict=True):
            assert row == pytest.approx(expected, rel=1e-4, abs=1e-6)
        for p, q in zip(population.student.parameters(), alone.student.parameters()):
            torch.testing.assert_close(p[k], q[0], rtol=1e-4, atol=1e-6)


@FEW
@given(seed=seeds, d=dims, hidden=st.lists(st.integers(1, 8), min_size=1, max_size=2),
       outputs=st.integers(1, 2), activation=st.sampled_from(sorted(ACTIVATIONS)))
def test_export_computes_what_the_checkpoint_computes(tmp_path_factory, seed, d, hidden,
                                                      outputs, activation):
    """The folded raw-units model (what every export format writes) equals the checkpoint's MLP
    with explicit scaling, for random architectures, scalers and raw inputs."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = mlp.mlp(d, hidden, activation, outputs)
    scaler = {"x_mean": torch.randn(d, generator=g) * 10,
              "x_std": torch.rand(d, generator=g) * 5 + 0.1,
              "y_mean": torch.randn(outputs, generator=g) * 10,
              "y_std": torch.rand(outputs, generator=g) * 5 + 0.1}
    path = tmp_path_factory.mktemp("export") / "student.pt"
    checkpoints.save_checkpoint(path, net.state_dict(), arch={
        "input_dim": d, "hidden": hidden, "activation": activation, "output_dim": outputs},
        scaler=scaler)
    payload = checkpoints.load_checkpoint(path)
    x = scaler["x_mean"] + scaler["x_std"] * 3 * torch.randn(64, d, generator=g)
    with torch.no_grad():
        folded = export.raw_model(payload)(x).double()
    reference = export.scaled_predict(payload, x)
    # within `dfkd export --tolerance` (1e-4 of y_std): float32 folding of scalers up to 50x
    # reaches 1.2e-5 for some draws; a wrong fold is off by O(1)
    assert float(((folded - reference).abs().amax(0) / scaler["y_std"]).max()) < 1e-4
