"""scikit-learn teachers: fitted into the store as ONNX (never a pickle), run as ONNX teachers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA, dfkd_here, load_split, load_teacher, make_config, run_here
from omegaconf import OmegaConf

from dfkd_cli.commands import distill, train_teacher
from dfkd_cli.data.datasets import load_table, split_for
from dfkd_cli.errors import UserError
from dfkd_cli.teachers import loader as teachers
from dfkd_cli.teachers import onnx_population
from dfkd_cli.teachers import scikit_learn as sklearn_teacher

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")

CPU = torch.device("cpu")
QUICK = ["epochs=3", "steps_per_epoch=4", "batch_size=10", "log_every=1", "progress=false"]


@pytest.fixture(scope="module")
def compositions(tmp_path_factory):
    """A folder with comp.csv: 600 rows of 6 fractions summing to 1 -> a smooth target, and a
    teacher store holding SVR teachers for seeds 1 and 2."""
    root = tmp_path_factory.mktemp("sklearn")
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(6), 600)
    y = np.sin(6 * x[:, 0]) + 2 * x[:, 1] * x[:, 2] + 0.05 * rng.standard_normal(600)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]).assign(y=y)
    frame.to_csv(root / "comp.csv", index=False)
    dfkd_here("train-teacher", *DATA, "teacher=svr", "seeds=[1,2]", "hydra.run.dir=svr", cwd=root)
    return root


DATA = ["dataset=csv", "dataset.path=comp.csv", "dataset.name=comp", "dataset.n_train=400"]


def config(root, *extra):
    return make_config("distill", [*DATA, f"dataset.path={root / 'comp.csv'}",
                                   f"teacher_store={root / 'outputs/teachers'}", *extra])


def test_svr_teacher_is_stored_as_onnx_of_raw_features(compositions):
    from sklearn.svm import SVR

    folder = compositions / "outputs/teachers/comp/svr/seed1"
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == [
        "metrics.csv", "spec.yaml", "teacher.onnx"]
    import onnx
    onnx.checker.check_model(onnx.load(folder / "teacher.onnx"))  # an ONNX graph, no pickle
    cfg = config(compositions, "teacher=svr")
    table = load_table(cfg.dataset, cfg.data_dir)
    part = split_for(cfg.dataset, table, 1)
    reference = SVR().fit(table.x[part.rows[0]], table.y[part.rows[0], 0])  # raw units
    teacher = load_teacher(cfg, [1], table, CPU)
    assert not teacher.differentiable and [r["split"] for r in teacher.recorded] == [(400, 20)]
    with torch.no_grad():
        got = teacher.module(part.x_test[None])[0, :, 0] * part.scaler.y_std + part.scaler.y_mean
    np.testing.assert_allclose(got.numpy(), reference.predict(table.x[part.rows[2]]), atol=2e-4)
    row = pd.read_csv(folder / "metrics.csv").iloc[0]
    truth = table.y[part.rows[2], 0]
    r2 = 1 - ((reference.predict(table.x[part.rows[2]]) - truth) ** 2).sum() / (
        (truth - truth.mean()) ** 2).sum()
    assert row.teacher_r2 == pytest.approx(r2, abs=1e-4) and row.onnx_max_abs_diff < 2e-4
    again = train_teacher.run(make_config("train_teacher", [
        *DATA, f"dataset.path={compositions / 'comp.csv'}", "teacher=svr",
        f"teacher_store={compositions / 'outputs/teachers'}"]), compositions / "again")
    assert list(again.status) == ["exists"] and again.teacher_r2[0] == row.teacher_r2


def test_stored_teacher_is_a_normal_onnx_teacher(compositions):
    folder = compositions / "outputs/teachers/comp/svr/seed2"
    store = load_teacher(config(compositions, "teacher=svr"), [2], None, CPU)
    foreign = load_teacher(config(compositions, "teacher=onnx",
                                   f"teacher.path={folder / 'teacher.onnx'}",
                                   f"teacher.spec={folder / 'spec.yaml'}"), [2], None, CPU)
    x = torch.randn(1, 50, 6)
    torch.testing.assert_close(store.module(x), foreign.module(x))
    torch.testing.assert_close(store.box[0], foreign.box[0])


def test_population_members_use_their_own_teachers(compositions):
    cfg = config(compositions, "teacher=svr")
    both = load_teacher(cfg, [1, 2], None, CPU)
    x = torch.randn(1, 30, 6).expand(2, -1, -1)
    out = both.module(x)
    for k, seed in enumerate((1, 2)):
        torch.testing.assert_close(out[k], load_teacher(cfg, [seed], None, CPU).module(x[:1])[0])
    assert not torch.allclose(out[0], out[1])


def test_a_population_runs_its_teachers_as_one_session(compositions):
    """The members' ONNX files merged into one onnxruntime session compute, bit for bit, what
    one session per member computes, and what each member's teacher computes alone."""
    merged = load_teacher(config(compositions, "teacher=svr"), [1, 2], None, CPU).module
    apart = load_teacher(config(compositions, "teacher=svr", "fast_path=off"), [1, 2], None,
                          CPU).module
    assert isinstance(merged, onnx_population.OnnxPopulation)
    assert isinstance(apart, teachers.PerMember)
    x = torch.randn(2, 30, 6)
    with torch.no_grad():
        out = merged(x)
        assert torch.equal(out, apart(x)) and not torch.allclose(out[0], out[1])
        for k, seed in enumerate((1, 2)):
            alone = load_teacher(config(compositions, "teacher=svr"), [seed], None, CPU)
            assert torch.equal(alone.module(x[k:k + 1])[0], out[k])


def test_models_of_other_operator_sets_are_not_merged(tmp_path):
    from onnx import TensorProto, helper, save

    for opset in (13, 17):
        graph = helper.make_graph(
            [helper.make_node("Neg", ["x"], ["y"])], "neg",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])
        save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]),
             tmp_path / f"{opset}.onnx")
    assert onnx_population.merge([tmp_path / "13.onnx", tmp_path / "17.onnx"]) is None
    same = onnx_population.merge([tmp_path / "17.onnx"] * 3)
    assert same is not None and len(same.graph.initializer) == 6  # an index, a shape per member


def test_a_de_population_is_its_members_alone(compositions):
    """The DE arm with the merged teachers and the rbf student's batched forward passes (no
    gradients, fast_path=auto): every history value of member k is the run with seed k."""
    common = [*DATA, "teacher=svr", "arm=case_study_de", "student=rbf", *QUICK]
    dfkd_here("distill", *common, "seeds=[1,2]", "hydra.run.dir=de_pop", cwd=compositions)
    for seed in (1, 2):
        dfkd_here("distill", *common, f"seed={seed}", f"hydra.run.dir=de{seed}", cwd=compositions)
        alone = pd.read_csv(compositions / f"de{seed}" / "history.csv")
        member = pd.read_csv(compositions / "de_pop" / f"seed{seed}" / "history.csv")
        pd.testing.assert_frame_equal(member[alone.columns], alone, check_exact=True)


def test_svr_teacher_distils_with_evolution_and_bounded_refuses_it(compositions):
    root = compositions
    dfkd_here("distill", *DATA, "teacher=svr", "strategy=evolution", "strategy.variant=best2bin",
              "strategy.starts=5", "strategy.include_starts=true", *QUICK, "hydra.run.dir=evo",
              cwd=root)
    row = pd.read_csv(root / "evo" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.teacher_hidden == "svr" and np.isfinite(row.student_rmse)
    assert row.teacher_path.endswith("comp/svr/seed1/teacher.onnx")
    refused = dfkd_here("distill", *DATA, "teacher=svr", "strategy=bounded", *QUICK,
                        "hydra.run.dir=bounded", cwd=root, check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "strategy=bounded needs the teacher's gradients" in refused.stderr
    with pytest.raises(UserError, match=(
            "train it first with: dfkd train-teacher dataset=csv .*dataset.name=comp .*seed=3 "
            "teacher=sklearn teacher.estimator._target_=sklearn.svm.SVR")):
        load_teacher(config(root, "teacher=svr"), [3], None, CPU)


def test_svr_spec_carries_the_simplex_of_its_training_rows(compositions):
    spec = OmegaConf.load(compositions / "outputs/teachers/comp/svr/seed1/spec.yaml")
    features = [f"f{i}" for i in range(6)]
    [group] = spec.simplex
    assert list(group.features) == features and group.total == pytest.approx(1.0, abs=1e-9)
    assert list(spec.type) == ["continuous"] * 6
    teacher = load_teacher(config(compositions, "teacher=svr"), [1], None, CPU)
    assert [g["features"] for g in teacher.domains[0].simplex] == [list(range(6))]


def test_a_spec_carries_the_total_its_rows_sum_to(tmp_path):
    """Percentages (rows summing to 100) beside a free feature: the stored spec, and the domain
    the teacher loads with, say total 100, not the 1 a group without a total defaults to."""
    rng = np.random.default_rng(1)
    parts = rng.dirichlet([1, 2, 3], 300) * 100
    free = rng.uniform(0, 5, 300)
    frame = pd.DataFrame(parts, columns=["p1", "p2", "p3"]).assign(
        q=free, y=parts[:, 0] / 50 + np.sin(free))
    frame.to_csv(tmp_path / "pct.csv", index=False)
    data = ["dataset=csv", f"dataset.path={tmp_path / 'pct.csv'}", "dataset.name=pct",
            "dataset.n_train=200", "teacher=svr"]
    run_here("train-teacher", data, tmp_path / "run", tmp_path)
    spec = OmegaConf.load(tmp_path / "outputs/teachers/pct/svr/seed1/spec.yaml")
    [group] = spec.simplex
    assert list(group.features) == ["p1", "p2", "p3"] and group.total == pytest.approx(100)
    cfg = make_config("distill", [*data, f"teacher_store={tmp_path / 'outputs/teachers'}"])
    [loaded] = load_teacher(cfg, [1], None, CPU).domains[0].simplex
    assert loaded["features"] == [0, 1, 2] and loaded["total"] == pytest.approx(100)


def teacher_inputs(cfg, run_dir, monkeypatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run `dfkd distill` in-process; every raw row the ONNX teacher was called on while the
    student trained (not the evaluation's), and every batch the student was fitted on."""
    from dfkd_cli.loop import student_loop
    from dfkd_cli.teachers import model_files

    rows, labelled, training = [], [], []
    forward, step = model_files.OnnxModule.forward, student_loop.student_step
    run = student_loop.StudentLoop.run

    def recording_forward(self, x):
        if training:
            rows.append(x.detach().reshape(-1, x.shape[-1]).clone())
        return forward(self, x)

    def recording_run(self, *args, **kwargs):
        training.append(True)
        try:
            return run(self, *args, **kwargs)
        finally:
            training.clear()

    def recording_step(y, student, opt, x, n_g, weights):
        labelled.append(x.clone())
        return step(y, student, opt, x, n_g, weights)

    monkeypatch.setattr(model_files.OnnxModule, "forward", recording_forward)
    monkeypatch.setattr(student_loop, "student_step", recording_step)
    monkeypatch.setattr(student_loop.StudentLoop, "run", recording_run)
    distill.run(cfg, run_dir)
    return torch.cat(rows), labelled


def assert_on_simplex(raw: torch.Tensor, total: float = 1.0) -> None:
    assert bool((raw >= -1e-6).all()) and bool(((raw.sum(-1) - total).abs() < 1e-4).all())


def test_de_arm_scores_and_labels_only_points_of_the_simplex(compositions, monkeypatch):
    """domain=on: every row the SVR teacher sees, the DE objective's candidates as well as the
    labelled batches, lies on the simplex of the six fractions; domain=off leaves it."""
    common = ["teacher=svr", "arm=case_study_de", "student=rbf", "student.net.units=10",
              *QUICK, "steps_per_epoch=2"]
    rows, labelled = teacher_inputs(config(compositions, *common, "domain=on"),
                                    compositions / "simplex_on", monkeypatch)
    assert len(labelled) == 6 and len(rows) > 6 * 26 * 5  # 26 DE evaluations of 5 per step
    assert_on_simplex(rows)
    rows, _ = teacher_inputs(config(compositions, *common, "domain=off"),
                             compositions / "simplex_off", monkeypatch)
    with pytest.raises(AssertionError):
        assert_on_simplex(rows)


def test_any_regressor_by_target_goes_through_skl2onnx(compositions):
    from sklearn.ensemble import RandomForestRegressor

    root = compositions
    forest = ["teacher=sklearn",
              "teacher.estimator._target_=sklearn.ensemble.RandomForestRegressor",
              "+teacher.estimator.n_estimators=10", "+teacher.estimator.random_state=0"]
    dfkd_here("train-teacher", *DATA, *forest, "hydra.run.dir=forest", cwd=root)
    folder = root / "outputs/teachers/comp/randomforestregressor-n_estimators10-random_state0"
    row = pd.read_csv(folder / "seed1" / "metrics.csv").iloc[0]
    cfg = config(root, *forest)
    part = load_split(cfg)
    table = load_table(cfg.dataset, cfg.data_dir)
    reference = RandomForestRegressor(n_estimators=10, random_state=0).fit(
        table.x[part.rows[0]], table.y[part.rows[0], 0])
    assert row.onnx_max_abs_diff < 1e-4 and row.teacher_r2 > 0.3
    teacher = load_teacher(cfg, [1], table, CPU)
    with torch.no_grad():
        got = teacher.module(part.x_test[None])[0, :, 0] * part.scaler.y_std + part.scaler.y_mean
    np.testing.assert_allclose(got.numpy(), reference.predict(table.x[part.rows[2]]), atol=1e-4)


@pytest.mark.parametrize("target,message", [
    (None, "teacher.estimator._target_=<a scikit-learn regressor"),
    ("sklearn.cluster.KMeans",
     "teacher.estimator._target_=sklearn.cluster.KMeans is not a scikit-learn regressor"),
    ("sklearn.svm.NoSuchModel", "teacher.estimator=.*NoSuchModel.* could not be built"),
    ("collections.OrderedDict",  # issue 24, item 7: was a traceback from sklearn's tags
     "teacher.estimator._target_=collections.OrderedDict is not a scikit-learn regressor"),
])
def test_bad_estimators_are_user_errors(target, message):
    extra = [f"teacher.estimator._target_={target}"] if target else []
    tcfg = make_config("train_teacher", ["teacher=sklearn", *extra]).teacher
    with pytest.raises(UserError, match=message):
        sklearn_teacher.build(tcfg) if target else sklearn_teacher.estimator_name(tcfg)


def test_a_bad_estimator_stops_train_teacher_in_one_line(compositions):
    proc = dfkd_here("train-teacher", *DATA, "teacher=sklearn",
                     "teacher.estimator._target_=sklearn.cluster.KMeans", "hydra.run.dir=bad",
                     cwd=compositions, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is not a scikit-learn regressor" in proc.stderr


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/datasets")
def test_protein_svr_teacher_matches_the_case_study(tmp_path):
    """The case study's teacher: SVR() on 2500 rows, test R^2 about 0.40 (0.39 for seed 1)."""
    dfkd_here("train-teacher", "dataset=protein", "teacher=svr", f"data_dir={SHARED_DATA}",
              "hydra.run.dir=run", cwd=tmp_path)
    row = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[0]
    assert (row.n_train, row.n_val, row.n_test) == (2500, 65, 583)
    assert 0.33 < row.teacher_r2 < 0.45
    dfkd_here("distill", "dataset=protein", "teacher=svr", f"data_dir={SHARED_DATA}",
              "arm=case_study_de", "epochs=2", "steps_per_epoch=5", "progress=false",
              "hydra.run.dir=de", cwd=tmp_path)
    history = pd.read_csv(tmp_path / "de" / "history.csv")
    assert (history.evo_objective_end >= history.evo_objective_start).all()
    row = pd.read_csv(tmp_path / "de" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.arm == "case_study_de" and row.batch_size == 10


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/datasets")
def test_protein_de_arm_labels_only_amino_acid_compositions(tmp_path, monkeypatch):
    """The case study with domain=on: the SVR's spec holds the simplex of the 20 amino-acid
    fractions, and every row the DE arm scores or labels is a composition (>= 0, sum 1)."""
    data = ["dataset=protein", f"data_dir={SHARED_DATA}", f"teacher_store={tmp_path / 'store'}"]
    dfkd_here("train-teacher", *data, "teacher=svr", "hydra.run.dir=teacher", cwd=tmp_path)
    spec = OmegaConf.load(tmp_path / "store/protein/svr/seed1/spec.yaml")
    assert [len(g.features) for g in spec.simplex] == [20]
    cfg = make_config("distill", [*data, "teacher=svr", "arm=case_study_de", "student=rbf",
                                  "domain=on", *QUICK, "steps_per_epoch=2"])
    rows, labelled = teacher_inputs(cfg, tmp_path / "de", monkeypatch)
    assert len(labelled) == 6
    assert_on_simplex(rows, spec.simplex[0].total)


def test_svr_spec_carries_the_input_statistics(compositions):
    """Issue 28: a scikit-learn teacher's spec.yaml holds the statistics of its training rows
    (those `dfkd spec` and a dfkd checkpoint hold), so prior=auto is the copula for it."""
    from dfkd_cli.data import domains, priors
    from dfkd_cli.utils.rng import Streams

    cfg = config(compositions, "teacher=svr")
    table = load_table(cfg.dataset, cfg.data_dir)
    expected = domains.infer(table.x[split_for(cfg.dataset, table, 1).rows[0]])
    teacher = load_teacher(cfg, [1], None, CPU)
    spec = OmegaConf.load(compositions / "outputs/teachers/comp/svr/seed1/spec.yaml")
    for key in domains.STATISTICS:
        np.testing.assert_allclose(np.array(spec[key]), np.array(getattr(expected, key)),
                                   rtol=0, atol=1e-12)
        assert getattr(teacher.domains[0], key) == getattr(expected, key)
    means, sds = (getattr(teacher.scalers[0], k)[None] for k in ("x_mean", "x_std"))
    assert priors.Prior("auto", Streams([1], CPU), 6, teacher.domains, means, sds,
                        "t").name == "copula"
    # a population: each member has its own spec's statistics (every member had the last one's)
    population = load_teacher(cfg, [2, 1], None, CPU)
    assert population.domains[1].copula == expected.copula
    assert population.domains[0].copula == load_teacher(cfg, [2], None, CPU).domains[0].copula
    assert population.domains[0].copula != expected.copula


def test_the_copula_refused_for_an_svr_teacher_gives_advice_that_can_help(compositions, tmp_path):
    """Issue 24, item 8: the hint was to retrain with overwrite=true, which then stored no
    statistics in an SVR teacher either; since issue 28 it does, so an SVR teacher from an older
    dfkd (a spec.yaml without them) is told to retrain."""
    import shutil

    old = tmp_path / "store/comp/svr/seed1"
    shutil.copytree(compositions / "outputs/teachers/comp/svr/seed1", old)
    spec = OmegaConf.to_container(OmegaConf.load(old / "spec.yaml"))
    for key in ("quantiles", "correlation", "copula"):
        del spec[key]
    OmegaConf.save(OmegaConf.create(spec), old / "spec.yaml")
    cfg = config(compositions, "teacher=svr", "strategy=random", "prior=copula", *QUICK,
                 f"teacher_store={tmp_path / 'store'}")
    with pytest.raises(UserError, match=r"prior=copula needs the teacher's input statistics .* "
                                        r"use prior=gaussian, or retrain it with dfkd "
                                        r"train-teacher overwrite=true"):
        distill.run(cfg, tmp_path / "run")
