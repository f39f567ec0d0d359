"""The property that defines each strategy, on a real (quickly trained) teacher."""

from __future__ import annotations

import pytest
import torch
from conftest import QUICK_TEACHER, load_split, make_config

from dfkd_cli.commands import train_teacher
from dfkd_cli.commands.records import loop_settings
from dfkd_cli.data.images import ImageView, total_variation
from dfkd_cli.errors import UserError
from dfkd_cli.loop import student_loop
from dfkd_cli.nets import mlp
from dfkd_cli.strategies.base import batch_diagnostics
from dfkd_cli.strategies.bounded import Bounded
from dfkd_cli.strategies.registry import STRATEGIES
from dfkd_cli.teachers import loader as teacher
from dfkd_cli.utils.rng import Streams

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained():
    """A friedman teacher and a student trained briefly on plain Gaussian samples."""
    cfg = make_config("train_teacher", QUICK_TEACHER)
    split = load_split(cfg)
    stacked, _, _, _ = train_teacher.fit(cfg, [split], [0], CPU)
    stacked.requires_grad_(False)
    box = (split.x_train.min(0).values[None], split.x_train.max(0).values[None])
    tch = teacher.Teacher(stacked, split.input_dim, box, ["test"])
    dcfg = make_config("distill", ["strategy=random", "epochs=5", "alpha=constant",
                                   "alpha.value=0", "teacher.hidden=[64]", "selection=last"])
    rng = Streams([0], CPU)
    student = mlp.StackedMLP(1, split.input_dim, [50], "tanh").init_(rng)
    strategy = STRATEGIES["random"](dcfg.strategy, split.input_dim, box, rng)
    student_loop.train_student(loop_settings(dcfg), tch, student, strategy, None)
    return tch, student


IMAGE = [1, 2, 5]  # the friedman teacher's 10 features seen as a 2 x 5 picture (image keys)


def as_image(members: int = 1) -> ImageView:
    return ImageView(IMAGE, torch.zeros(members, 10), torch.ones(members, 10))


def bounded(seed=0, **overrides):
    cfg = make_config("distill", [f"strategy.{k}={v}" for k, v in overrides.items()])
    return Bounded(cfg.strategy, 10, None, Streams([seed], CPU), image=as_image())


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


@pytest.mark.parametrize("tv", [0.0, 0.5])
def test_bounded_step_is_torch_rmsprop(trained, tv):
    """The written-out update equals torch.optim.RMSprop on x (lr 0.1, wd beta, fresh state),
    with the smoothness term when tv > 0."""
    tch, student = trained
    ours = bounded(seed=2, tv=tv)
    cfg = ours.config
    x_ours = ours.sample(tch.module, student, 64)
    x = ours.start.clone().requires_grad_(True)
    opt = torch.optim.RMSprop([x], lr=cfg.lr, alpha=cfg.rho, weight_decay=cfg.beta)
    for _ in range(cfg.steps):
        s = student(x)
        smooth = total_variation(as_image().to_images(x))
        loss = (-(tch.module(x) - s).pow(2).sum(2) + cfg.gamma * s.pow(2).sum(2)
                + tv * smooth).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # hand-written vs autograd gradients differ in rounding; RMSprop divides by |grad|, which
    # magnifies that where a coordinate's gradient is near zero
    torch.testing.assert_close(x_ours, x.detach(), atol=5e-4, rtol=1e-4)


def test_bounded_leaves_the_student_gradients_alone(trained):
    """Sampling reads the student (x moves with it) but never writes its weights or the
    gradients the student's own step is about to use."""
    tch, student = trained
    weights = [p.detach().clone() for p in student.parameters()]
    grads = [torch.full_like(p, 0.5) for p in student.parameters()]
    for p, g in zip(student.parameters(), grads):
        p.grad = g.clone()
    try:
        x = bounded(seed=5).sample(tch.module, student, 16)
        for p, w, g in zip(student.parameters(), weights, grads):
            assert torch.equal(p, w) and torch.equal(p.grad, g)
    finally:
        student.zero_grad(set_to_none=True)
    other = mlp.StackedMLP(1, 10, [50], "tanh").init_(Streams([9], CPU))
    assert not torch.equal(bounded(seed=5).sample(tch.module, other, 16), x)  # it reads S


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


# ---------------------------------------------------------------------------------------------
# Box samplers: uniform, lhs, sobol

BOX = (torch.tensor([[-1.0, 0.0, -3.0], [0.0, 2.0, -1.0]]),
       torch.tensor([[1.0, 4.0, -2.0], [0.5, 3.0, 5.0]]))  # two members, three features


def strategy(name, input_dim=3, box=BOX, seeds=(0, 1), overrides=()):
    cfg = make_config("distill", [f"strategy={name}", *overrides])
    return STRATEGIES[name](cfg.strategy, input_dim, box, Streams(list(seeds), CPU))


@pytest.mark.parametrize("name", ["uniform", "lhs", "sobol"])
def test_box_samplers_fill_each_members_box(name):
    x = strategy(name).sample(None, None, 4096)
    assert x.shape == (2, 4096, 3)
    low, high = BOX[0].unsqueeze(1), BOX[1].unsqueeze(1)
    assert bool(((x >= low) & (x <= high)).all())
    u = (x - low) / (high - low)  # back to [0, 1): uniform per feature
    torch.testing.assert_close(u.mean(1), torch.full((2, 3), 0.5), atol=0.02, rtol=0)
    torch.testing.assert_close(u.var(1), torch.full((2, 3), 1 / 12), atol=0.01, rtol=0)


def strata(x, n):
    low, high = BOX[0].unsqueeze(1), BOX[1].unsqueeze(1)
    return ((x - low) / (high - low) * n).floor().long()


def test_lhs_puts_one_sample_in_each_stratum_per_feature():
    lhs = strategy("lhs")
    for n in (50, 7):
        for _ in range(3):
            cells = strata(lhs.sample(None, None, n), n)  # (K, n, d)
            expected = torch.arange(n).expand(2, 3, n)
            assert torch.equal(cells.transpose(1, 2).sort(dim=2).values, expected)


def test_sobol_is_balanced_reproducible_and_resumable():
    a = strategy("sobol")
    first = a.sample(None, None, 64)
    # a scrambled Sobol sequence puts one of its first 2^k points in each of 2^k strata per feature
    expected = torch.arange(64).expand(2, 3, 64)
    assert torch.equal(strata(first, 64).transpose(1, 2).sort(dim=2).values, expected)
    torch.testing.assert_close(strategy("sobol").sample(None, None, 64), first)  # same seeds
    assert not torch.equal(first[0], first[1])  # members scramble with their own seeds
    assert not torch.equal(strategy("sobol", seeds=(2, 3)).sample(None, None, 64), first)
    state = a.state_dict()
    later = a.sample(None, None, 10)
    resumed = strategy("sobol", seeds=(7, 8))
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed.sample(None, None, 10), later)


@pytest.mark.parametrize("name,overrides", [
    ("uniform", []), ("lhs", []), ("sobol", []), ("evolution", []),
    ("bounded", ["strategy.clip_to_box=true"]),
])
def test_strategies_that_need_the_box_say_so(name, overrides):
    with pytest.raises(UserError, match=rf"strategy={name} needs the teacher's per-feature box"):
        strategy(name, box=None, overrides=overrides)


# ---------------------------------------------------------------------------------------------
# bounded: the explicit bounds

def test_bounded_radius_projects_onto_the_ball_around_the_start(trained):
    tch, student = trained
    for radius in (0.3, 1.2):
        s = bounded(radius=radius)
        x = s.sample(tch.module, student, 200)
        dist = (x - s.start).abs().amax(dim=2)
        assert float(dist.max()) <= radius + 1e-6
        assert float(dist.mean()) > 0.8 * radius  # the gap pushes most samples to the bound
    # a radius beyond the ~2 per coordinate that K = 2 steps can move leaves the paper's path
    torch.testing.assert_close(bounded(seed=4, radius=10.0).sample(tch.module, student, 64),
                               bounded(seed=4).sample(tch.module, student, 64))


def test_bounded_tv_smooths_the_samples_and_keeps_a_large_gap(trained):
    """strategy.tv: from the same starts, the samples are smoother as pictures than tv=0's,
    and still carry far more teacher-student gap than the starts (plain prior draws)."""
    tch, student = trained
    rough, smooth = bounded(seed=5), bounded(seed=5, tv=0.003)
    x_rough, x_smooth = rough.sample(tch.module, student, 500), smooth.sample(tch.module,
                                                                              student, 500)
    assert torch.equal(rough.start, smooth.start)
    view = as_image()
    tv_rough, tv_smooth = (float(total_variation(view.to_images(x)).mean())
                           for x in (x_rough, x_smooth))
    assert tv_smooth < 0.8 * tv_rough
    gap = {name: float(batch_diagnostics(tch.module, student, x, None, None)["gap_mean"])
           for name, x in (("smooth", x_smooth), ("start", smooth.start))}
    assert gap["smooth"] > 3 * gap["start"]


def test_bounded_clip_to_box_stays_in_the_box(trained):
    tch, student = trained
    cfg = make_config("distill", ["strategy.clip_to_box=true"])
    s = Bounded(cfg.strategy, 10, tch.box, Streams([0], CPU))
    x = s.sample(tch.module, student, 500)
    stats = batch_diagnostics(tch.module, student, x, s.start, tch.box)
    assert float(stats["outside_box"]) == 0
    plain = batch_diagnostics(tch.module, student, s.start, None, tch.box)
    assert float(plain["outside_box"]) > 0.3  # the Gaussian starts were not


# ---------------------------------------------------------------------------------------------
# generator (Kang & Kang)

SMALL_G = {"hidden": "[64]", "latent_dim": 8}  # the published G is 50 -> 500 -> d; same loss


def generator(seeds=(0,), **overrides):
    overrides = {**SMALL_G, **overrides}
    cfg = make_config("distill", ["strategy=generator",
                                  *[f"strategy.{k}={v}" for k, v in overrides.items()]])
    return STRATEGIES["generator"](cfg.strategy, 10, None, Streams(list(seeds), CPU),
                                   image=as_image(len(seeds)))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_generator_gap_rises_while_its_loss_falls(trained, arch):
    """Kang & Kang's MLP generator, and the convolutional one (strategy.arch=conv) on the
    features seen as a picture."""
    tch, student = trained
    gen = generator(arch=arch, channels="[8,4]")
    z = torch.randn(1, 500, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = gen.objective(tch.module, student, z)
    losses = [gen.update(tch.module, student)["gen_loss"] for _ in range(30)]
    with torch.no_grad():
        after = gen.objective(tch.module, student, z)
    assert float(after["loss"]) < float(before["loss"])
    assert float(after["gap"]) > 5 * float(before["gap"])
    assert float(torch.stack(losses[-5:]).mean()) < float(torch.stack(losses[:5]).mean())
    x = gen.sample(tch.module, student, 500)
    assert x.shape == (1, 500, 10) and not x.requires_grad


def test_generator_leaves_the_student_gradients_alone(trained):
    tch, student = trained
    student.zero_grad(set_to_none=True)
    gen = generator()
    gen.update(tch.module, student)
    gen.sample(tch.module, student, 16)
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is not None for p in gen.net.parameters())


@pytest.mark.parametrize("term,measure", [("beta", "norm"), ("gamma", "output")])
def test_generator_beta_and_gamma_terms_act(trained, term, measure):
    """Kang & Kang's code drops both terms; here each one is in L_G and shapes G."""
    tch, student = trained
    z = torch.randn(1, 256, 8, generator=torch.Generator().manual_seed(1))
    off, on = generator(**{term: 0.0}), generator(**{term: 2.0})
    with torch.no_grad():  # same weights: L_G differs by exactly the term
        a, b = off.objective(tch.module, student, z), on.objective(tch.module, student, z)
    torch.testing.assert_close(b["loss"] - a["loss"], 2.0 * a[measure])
    for _ in range(20):
        off.update(tch.module, student)
        on.update(tch.module, student)
    with torch.no_grad():
        a, b = off.objective(tch.module, student, z), on.objective(tch.module, student, z)
    assert float(b[measure]) < 0.5 * float(a[measure])


def test_generator_resumes_from_its_state(trained):
    tch, student = trained
    straight = generator()
    for _ in range(4):
        straight.update(tch.module, student)
    first = generator()
    for _ in range(2):
        first.update(tch.module, student)
    state, rng_state = first.state_dict(), first.rng.get_state()
    resumed = generator(seeds=(9,))
    resumed.load_state_dict(state)
    resumed.rng.set_state(rng_state)
    for _ in range(2):
        resumed.update(tch.module, student)
    for a, b in zip(straight.net.parameters(), resumed.net.parameters()):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(straight.sample(tch.module, student, 8),
                               resumed.sample(tch.module, student, 8))


# ---------------------------------------------------------------------------------------------
# impressions (Data Impressions for regression)

def impressions(seeds=(0,), **overrides):
    overrides = {**SMALL_G, **overrides}
    cfg = make_config("distill", ["strategy=impressions",
                                  *[f"strategy.{k}={v}" for k, v in overrides.items()]])
    return STRATEGIES["impressions"](cfg.strategy, 10, None, Streams(list(seeds), CPU))


@pytest.fixture(scope="module")
def fitted_impressions(trained):
    tch, _ = trained
    di = impressions(steps=400)
    fit = di.prepare(tch.module)["impressions_fit"]
    return di, fit


def test_impressions_teacher_outputs_follow_the_target_prior(trained, fitted_impressions):
    tch, _ = trained
    di, fit = fitted_impressions
    with torch.no_grad():
        drawn = di.draw(4000)
        out = tch.module(drawn["x"])
    assert abs(float(out.mean())) < 0.1 and abs(float(out.std()) - 1) < 0.1
    # conditioned on y*: the teacher returns the target that was asked for
    assert float(torch.corrcoef(torch.stack([out.flatten(), drawn["y"].flatten()]))[0, 1]) > 0.95
    assert float(fit) < 0.15  # the last batch's mean (T(x) - y*)^2
    x = di.sample(tch.module, None, 100)
    assert x.shape == (1, 100, 10) and not x.requires_grad


def test_impressions_prepare_fits_once_and_resumes(trained, fitted_impressions):
    tch, _ = trained
    di, _ = fitted_impressions
    resumed = impressions(steps=400, seeds=(5,))
    resumed.load_state_dict(di.state_dict())
    assert resumed.prepare(tch.module) == {}  # already fitted: no second fit
    for a, b in zip(di.net.parameters(), resumed.net.parameters()):
        torch.testing.assert_close(a, b)
    fresh = impressions(steps=0)
    assert fresh.prepare(tch.module) == {} and fresh.prepared


# ---------------------------------------------------------------------------------------------
# evolution (differential evolution, forward passes only)

class NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this teacher has no gradients")


class BlackBox(torch.nn.Module):
    """A teacher whose backward pass raises: only its outputs can be used."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return NoBackward.apply(self.net(x))


def test_black_box_teacher_really_has_no_backward(trained):
    tch, _ = trained
    x = torch.randn(1, 4, 10, requires_grad=True)
    with pytest.raises(RuntimeError, match="no gradients"):
        BlackBox(tch.module)(x).sum().backward()


def test_evolution_improves_its_objective_with_a_black_box_teacher(trained):
    tch, student = trained
    teacher = BlackBox(tch.module)
    cfg = make_config("distill", ["strategy=evolution", "strategy.generations=10"])
    evo = STRATEGIES["evolution"](cfg.strategy, 10, tch.box, Streams([0], CPU))
    x = evo.sample(teacher, student, 50)
    start = evo.start
    with torch.no_grad():
        f0 = evo.objective(teacher, student, start, None)
        f1 = evo.objective(teacher, student, x, None)
    assert bool((f1 >= f0 - 1e-6).all())  # selection never loses an individual's fitness
    assert float(f1.mean()) > 2 * float(f0.mean())
    torch.testing.assert_close(evo.update(teacher, student)["evo_objective_end"], f1.mean(1))
    low, high = tch.box[0].unsqueeze(1), tch.box[1].unsqueeze(1)
    assert bool(((x >= low) & (x <= high)).all()) and bool(((start >= low) & (start <= high)).all())
    # zero generations: the clamped Gaussian starts themselves
    cfg0 = make_config("distill", ["strategy=evolution", "strategy.generations=0"])
    evo0 = STRATEGIES["evolution"](cfg0.strategy, 10, tch.box, Streams([0], CPU))
    torch.testing.assert_close(evo0.sample(teacher, student, 50), start)


def test_evolution_coverage_term_spreads_the_teacher_outputs(trained):
    tch, student = trained

    def run(weight):
        cfg = make_config("distill", ["strategy=evolution", "strategy.generations=20",
                                      f"strategy.coverage={weight}"])
        evo = STRATEGIES["evolution"](cfg.strategy, 10, tch.box, Streams([0], CPU))
        x = evo.sample(tch.module, student, 200)
        with torch.no_grad():
            return tch.module(x).flatten(), evo.targets

    out_off, no_targets = run(0.0)
    out_on, targets = run(10.0)
    assert no_targets is None  # w = 0: no targets drawn
    targets = targets.flatten()
    miss_off = (out_off - targets).pow(2).mean()
    miss_on = (out_on - targets).pow(2).mean()
    assert float(miss_on) < 0.5 * float(miss_off)
    assert float(torch.corrcoef(torch.stack([out_on, targets]))[0, 1]) > 0.8


def test_impressions_refuses_a_teacher_with_several_outputs():
    two = mlp.StackedMLP(1, 3, [4], "tanh", 2).init_(Streams([0], CPU)).requires_grad_(False)
    cfg = make_config("distill", ["strategy=impressions", "strategy.steps=3",
                                  "strategy.hidden=[8]", "strategy.latent_dim=2"])
    impressions = STRATEGIES["impressions"](cfg.strategy, 3, None, Streams([0], CPU))
    with pytest.raises(UserError, match="conditions on one target; the teacher has 2 outputs"):
        impressions.prepare(two)


def test_evolution_needs_three_individuals(trained):
    tch, student = trained
    evo = strategy("evolution", input_dim=10, box=tch.box, seeds=(0,))
    with pytest.raises(UserError, match="at least 3"):
        evo.sample(tch.module, student, 2)
