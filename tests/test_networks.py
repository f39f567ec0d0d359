"""The network seam: the fast path and the autograd path train an MLP alike under every strategy;
a population on the autograd path is its members run alone; built-in networks by name."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import dfkd_here, load_teacher, make_config

from dfkd_cli.commands import distill, train_teacher
from dfkd_cli.commands.records import loop_settings
from dfkd_cli.data.datasets import Scaler, load_table, split_for
from dfkd_cli.errors import UserError
from dfkd_cli.loop.student_loop import StudentLoop
from dfkd_cli.nets import architecture, checkpoints, factory, mlp, population
from dfkd_cli.nets.checkpoints import load_checkpoint
from dfkd_cli.strategies.registry import STRATEGIES, build_strategy
from dfkd_cli.utils.rng import Streams

CPU = torch.device("cpu")
D = 5
STEPS = ["epochs=5", "steps_per_epoch=10", "log_every=1",  # 50 student steps
         "selection=last"]  # these loops are built by hand, without a fidelity set
QUICK = {"impressions": ["strategy.steps=20"], "generator": ["strategy.hidden=[32]"]}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the CLI runs (threads=1): these tiny products are slower on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A dfkd checkpoint of an MLP teacher (5 -> 16 tanh -> 1) with a feature box."""
    arch = {"name": "mlp", "input_dim": D, "output_dim": 1, "hidden": [16],
            "activation": "tanh"}
    net = factory.build(arch, Streams([100], CPU))
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    scaler = Scaler(torch.zeros(D), torch.ones(D), torch.zeros(1), torch.ones(1))
    checkpoints.save_checkpoint(path, net.member_state_dict(0), arch=arch, scaler=scaler.payload(),
                           input_spec={"features": [f"x{i}" for i in range(D)],
                                       "low": -2 * torch.ones(D), "high": 2 * torch.ones(D)})
    return path


def train(teacher_file, seeds, overrides):
    """Distil the teacher file into a student population; (loop, student)."""
    cfg = make_config("distill", ["dataset=none", f"teacher.path={teacher_file}",
                                  "teacher.hidden=[16]", *STEPS, *overrides])
    teacher = load_teacher(cfg, seeds, None, CPU)
    rng = Streams(seeds, CPU)
    _, student = distill.build_student(cfg.student, cfg.dataset.input_shape, cfg.fast_path, teacher, rng)
    # dataset=none: a strategy that draws training rows (real_rows) gets fixed stand-in rows
    x = torch.randn(len(seeds), 40, D, generator=torch.Generator().manual_seed(7))
    rows = (x, teacher.module(x).detach()) if STRATEGIES[cfg.strategy.name].Config.needs_rows else None
    loop = StudentLoop(loop_settings(cfg), teacher, student, build_strategy(cfg.strategy, teacher, rng, rows),
                       None)
    loop.run()
    return loop, student


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_fast_and_autograd_paths_train_an_mlp_alike(teacher_file, strategy):
    """50 student steps: the same losses and weights (relative difference <= 1e-5)."""
    common = [f"strategy={strategy}", *QUICK.get(strategy, [])]
    fast, fast_student = train(teacher_file, [1], ["fast_path=auto", *common])
    slow, slow_student = train(teacher_file, [1], ["fast_path=off", *common])
    assert isinstance(fast_student, mlp.StackedMLP)
    assert isinstance(slow_student, population.ModulePopulation)
    for key in ("loss", "loss_g", "loss_p"):
        ours = torch.tensor([row[key] for row in slow.history[0]])
        theirs = torch.tensor([row[key] for row in fast.history[0]])
        assert relative(ours, theirs) <= 1e-5, key
    for name, tensor in fast_student.member_state_dict(0).items():
        assert relative(slow_student.member_state_dict(0)[name], tensor) <= 1e-5, name


@pytest.mark.parametrize("student,strategy", [("rbf", "bounded"), ("resmlp", "evolution"),
                                              ("mlp50", "random")])
def test_an_autograd_population_is_its_members_alone(teacher_file, student, strategy):
    """Bit for bit: every history value and weight of member k equals the run with seed k.
    (fast_path=off: the MLP teacher too; with fast_path=auto an rbf student's forward passes
    without gradients run batched, test_sklearn_teacher.py checks those with ONNX teachers.)"""
    common = ["fast_path=off", f"student={student}", f"strategy={strategy}",
              *QUICK.get(strategy, [])]
    population, pop_student = train(teacher_file, [1, 2], common)
    for k, seed in enumerate([1, 2]):
        alone, alone_student = train(teacher_file, [seed], common)
        assert population.history[k] == alone.history[0]
        for name, tensor in alone_student.member_state_dict(0).items():
            assert torch.equal(pop_student.member_state_dict(k)[name], tensor), name


def test_rbf_population_forward_is_its_members_forward():
    """Without gradients an rbf population runs as one batched program (population_forward);
    with them, and under fast_path=off, member by member; the outputs agree to rounding."""
    arch = architecture.describe(make_config("distill", ["student=rbf"]).student, D, 2)
    batched = factory.build(arch, Streams([1, 2, 3], CPU))
    looped = factory.build(arch, Streams([1, 2, 3], CPU), "off")
    assert batched.batched_forward is not None and looped.batched_forward is None
    x = torch.randn(3, 7, D)
    with torch.no_grad():
        fast, slow = batched(x), looped(x)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(batched(x), fast)  # with gradients: the member loop
    assert not torch.allclose(fast[0], fast[1])


def test_rbf_is_its_formula():
    """y_i = b_i + sum_j W_ij exp(-||x - c_j||^2 / (2 s_j^2)), s_j = exp(log_width_j), written
    out unit by unit in float64: one network, and a population (each member its own centres,
    widths and output layer) through population_forward."""
    from dfkd_cli.nets.builtin import RBF

    def by_hand(x, centres, log_width, weight, bias):
        out = torch.zeros(len(x), len(bias), dtype=torch.float64)
        for n, row in enumerate(x.double()):
            for j, (c, w) in enumerate(zip(centres.double(), log_width.double())):
                phi = torch.exp(-((row - c) ** 2).sum() / (2 * torch.exp(w) ** 2))
                out[n] += weight.double()[:, j] * phi
            out[n] += bias.double()
        return out

    torch.manual_seed(0)
    nets = [RBF(3, 2, units=4) for _ in range(2)]
    with torch.no_grad():
        for k, net in enumerate(nets):  # widths apart from 1, from each other and by member
            net.log_width.copy_(torch.tensor([-0.7, 0.0, 0.4, 1.1]) + 0.3 * k)
    x = torch.randn(2, 5, 3)
    params = [dict(net.named_parameters()) for net in nets]
    stacked = {name: torch.stack([p[name] for p in params]) for name in params[0]}
    together = RBF.population_forward(stacked, x)
    for k, net in enumerate(nets):
        expected = by_hand(x[k], net.centres, net.log_width, net.out.weight, net.out.bias)
        torch.testing.assert_close(net(x[k]).double(), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(together[k].double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["rbf", "resmlp", "cnn"])
def test_builtin_networks_learn_by_name(teacher_file, name):
    """A built-in student's loss falls over a short run on the autograd path."""
    loop, student = train(teacher_file, [1], [f"student={name}", "strategy=random",
                                              "optimizer.lr=0.01"])
    assert isinstance(student, population.ModulePopulation)
    losses = [row["loss"] for row in loop.history[0]]
    assert losses[-1] < losses[0]


def test_cnn_takes_the_dataset_input_shape():
    arch = {"name": "cnn", "input_dim": 12, "output_dim": 2, "kwargs": {"input_shape": [3, 2, 2]}}
    net = factory.make_module(arch)
    assert isinstance(net.features[0], torch.nn.Conv2d) and net(torch.randn(4, 12)).shape == (4, 2)
    with pytest.raises(UserError, match="input_shape"):
        factory.make_module(arch | {"input_dim": 10})


def test_a_custom_checkpoint_needs_its_target_named():
    arch = {"name": "custom", "target": "my_nets.Wide", "input_dim": 3, "output_dim": 1,
            "kwargs": {}}
    architecture.check_target(arch, "my_nets.Wide", "teacher.net._target_", "t.pt")  # named: fine
    for named in (None, "other.Net"):
        with pytest.raises(UserError, match="pass teacher.net._target_=my_nets.Wide$"):
            architecture.check_target(arch, named, "teacher.net._target_", "t.pt")


def test_an_autograd_teacher_population_is_its_members_alone():
    """train-teacher seeds=[1,2] on the autograd path: each member as trained alone, early
    stopping (patience 1) included."""
    cfg = make_config("train_teacher", ["teacher=rbf", "epochs=4", "batch_size=64", "patience=1",
                                        "dataset.n_train=400"])
    table = load_table(cfg.dataset, cfg.data_dir)
    splits = {s: split_for(cfg.dataset, table, s) for s in (1, 2)}
    together, _, history, best = train_teacher.fit(cfg, [splits[1], splits[2]], [1, 2], CPU)
    for k, seed in enumerate([1, 2]):
        alone, _, alone_history, alone_best = train_teacher.fit(cfg, [splits[seed]], [seed], CPU)
        assert history[k] == alone_history[0] and best[k] == alone_best[0]
        for name, tensor in alone.member_state_dict(0).items():
            assert torch.equal(together.member_state_dict(k)[name], tensor), name


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A CSV of 300 rows of 2 x 3 x 3 'images' (18 columns) and a target of their pixels."""
    path = tmp_path_factory.mktemp("images") / "images.csv"
    x = torch.rand(300, 18, generator=torch.Generator().manual_seed(0))
    y = x.view(300, 2, 3, 3)[:, 0, :2, :2].sum((1, 2)) - x.view(300, 2, 9)[:, 1].mean(1)
    frame = pd.DataFrame(x.numpy(), columns=[f"p{i}" for i in range(18)]).assign(y=y.numpy())
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("teacher,student,data", [
    ("rbf", "resmlp", []), ("resmlp", "rbf", []), ("cnn", "cnn", ["images"])])
def test_builtin_networks_train_as_teacher_and_student(tmp_path, images, teacher, student, data):
    """Through the installed dfkd: train-teacher teacher=<name>, then distil it into
    student=<name> (a cnn on image-shaped rows: dataset.input_shape=[2,3,3])."""
    dataset = (["dataset=csv", f"dataset.path={images}", "dataset.name=images",
                "dataset.input_shape=[2,3,3]"] if data else [])
    dfkd_here("train-teacher", f"teacher={teacher}", *dataset, "epochs=3", "batch_size=64",
              "progress=false", cwd=tmp_path)
    dfkd_here("distill", f"teacher={teacher}", f"student={student}", *dataset, "epochs=4",
              "steps_per_epoch=3", "log_every=2", "progress=false", "hydra.run.dir=run",
              cwd=tmp_path)
    row = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.student_hidden.startswith(student)
    assert row.teacher_hidden.startswith(teacher) and pd.notna(row.student_rmse)
    payload = load_checkpoint(tmp_path / "run" / "student.pt")
    if student == "cnn":
        assert payload["arch"]["kwargs"]["input_shape"] == [2, 3, 3]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_distils_into_a_radial_basis_student(teacher_file, strategy):
    loop, _ = train(teacher_file, [1], ["student=rbf", f"strategy={strategy}", "epochs=2",
                                        "steps_per_epoch=3", *QUICK.get(strategy, [])])
    assert all(row["nonfinite"] == 0 and row["loss"] > 0 for row in loop.history[0])


def test_a_teacher_file_of_another_network_is_labelled_by_what_it_holds(tmp_path):
    """Issue 24, item 8: a distill from an rbf teacher.path wrote teacher_hidden=mlp500-tanh
    (the teacher config's default), not the loaded teacher's architecture."""
    arch = {"name": "rbf", "input_dim": D, "output_dim": 1, "kwargs": {"units": 7}}
    net = factory.build(arch, Streams([100], CPU))
    path = tmp_path / "rbf.pt"
    scaler = Scaler(torch.zeros(D), torch.ones(D), torch.zeros(1), torch.ones(1))
    checkpoints.save_checkpoint(path, net.member_state_dict(0), arch=arch,
                                scaler=scaler.payload(),
                                input_spec={"features": [f"x{i}" for i in range(D)],
                                            "low": -2 * torch.ones(D), "high": 2 * torch.ones(D)})
    cfg = make_config("distill", ["dataset=none", f"teacher.path={path}", "strategy=random",
                                  "selection=last", *STEPS])
    row = distill.run(cfg, tmp_path / "run").iloc[0]
    assert row.teacher_hidden == architecture.arch_name(arch) == "rbf-units7"


def test_a_population_of_another_network_is_its_members_alone(teacher_file):
    """Issue 24, item 9: a resmlp population under bounded is its members run alone, bit for
    bit, when the MLP teacher runs member by member (fast_path=off). On the fast path the
    teacher's batched sigmoid rounds its last bit differently with the population's size, and
    bounded's normalised steps on x amplify that: close, not equal (README)."""
    common = ["student=resmlp", "student.net.width=16", "strategy=bounded", "fast_path=off"]
    _, population = train(teacher_file, [1, 2], common)
    for k, seed in enumerate([1, 2]):
        _, alone = train(teacher_file, [seed], common)
        for a, b in zip(population.params, alone.params):
            assert torch.equal(a[k], b[0])
