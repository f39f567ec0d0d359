"""The case studies' data: protein solubility (its own split sizes) and MNIST's IDX files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import (
    SHARED_DATA,
    dfkd_here,
    fake_mnist,
    load_split,
    member_splits,
    load_teacher,
    make_config,
    write_idx,
)

from dfkd_cli.config import validate
from dfkd_cli.data.datasets import friedman1, read_idx, read_mnist, split
from dfkd_cli.errors import UserError

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/datasets")


def test_max_train_fraction_is_a_split_key():
    table = friedman1(1000, 1.0)
    assert len(split(table, 5000, 0.1, 1).x_train) == 700  # the benchmarks' 70% cap
    s = split(table, 5000, 0.1, 1, max_train_fraction=0.8)
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (800, 20, 180)


@needs_shared
def test_protein_split_is_the_case_studys():
    cfg = make_config("train_teacher", ["dataset=protein", f"data_dir={SHARED_DATA}"])
    s = load_split(cfg)
    # 3148 rows: 2500 train, 648 rest -> 65 validation, 583 test; 20 fractions -> solubility
    assert (len(s.x_train), len(s.x_val), len(s.x_test), s.input_dim) == (2500, 65, 583, 20)
    assert s.targets == ["solubility"] and s.features[:3] == ["A", "R", "N"]
    raw = s.x_test * s.scaler.x_std + s.scaler.x_mean
    np.testing.assert_allclose(raw.sum(1).numpy(), 1.0, atol=1e-4)
    other = load_split(make_config("train_teacher", ["dataset=protein", "seed=2",
                                                     f"data_dir={SHARED_DATA}"]))
    assert not np.array_equal(s.y_test.numpy(), other.y_test.numpy())


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_reader_keeps_pixel_order(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28))
    labels = np.arange(12) % 10
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}"), images)
    table = read_mnist(tmp_path, ["t10k"], [1, 28, 28])
    assert table.x.shape == (12, 784) and table.targets == ["digit"]
    np.testing.assert_array_equal(table.x[3].reshape(28, 28), images[3])  # row-major pixels
    np.testing.assert_array_equal(table.y[:, 0], labels)
    with pytest.raises(UserError, match=r"input_shape=\[1, 14, 14\] does not hold the 784"):
        read_mnist(tmp_path, ["t10k"], [1, 14, 14])


def test_bad_idx_files_are_user_errors(tmp_path):
    (tmp_path / "junk").write_bytes(b"not an idx file")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "short", np.zeros((3, 4)))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(UserError, match=r"header says \(3, 4\) but the file holds 10"):
        read_idx(tmp_path / "short")
    # issue 24, item 7: a header of 255 dimensions, and a file of 0 images, were tracebacks
    (tmp_path / "ndim").write_bytes(bytes([0, 0, 8, 0xFF]) + bytes(16))
    with pytest.raises(UserError, match=r"damaged IDX header \(it says 255 dimensions"):
        read_idx(tmp_path / "ndim")
    write_idx(tmp_path / "empty", np.zeros((0, 28, 28)))
    with pytest.raises(UserError, match=r"the header says \(0, 28, 28\): no images"):
        read_idx(tmp_path / "empty")
    cfg = make_config("distill", ["dataset=mnist", "dataset.parts=[]"])
    with pytest.raises(UserError, match=r"^dataset.parts=\[\] is not valid"):
        validate(cfg)


@needs_shared
def test_mnist_reads_the_test_set_as_regression():
    cfg = make_config("train_teacher", ["dataset=mnist", f"data_dir={SHARED_DATA}"])
    assert list(cfg.dataset.input_shape) == [1, 28, 28]
    s = load_split(cfg)
    assert (len(s.x_train), len(s.x_val), len(s.x_test), s.input_dim) == (5000, 500, 4500, 784)
    raw_y = s.y_train[:, 0] * s.scaler.y_std + s.scaler.y_mean
    np.testing.assert_allclose(np.unique(raw_y.round().numpy()), np.arange(10))


def test_mnist_trains_a_cnn_teacher_and_distils_a_cnn_student(tmp_path):
    """dataset=mnist end to end on the fake IDX files: a cnn teacher sees 1 x 28 x 28 images,
    and a cnn student learns from it in a few bounded steps (teacher gradients through the
    convolutions) and random steps."""
    import torch

    from dfkd_cli.nets.checkpoints import load_checkpoint

    fake_mnist(tmp_path)
    data = ["dataset=mnist", "data_dir=.", "dataset.n_train=200", "teacher=cnn"]
    dfkd_here("train-teacher", *data, "epochs=2", "batch_size=32", "hydra.run.dir=teacher",
              cwd=tmp_path)
    row = pd.read_csv(tmp_path / "teacher" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.teacher_hidden == "cnn-channels8x16"
    stored = load_checkpoint(tmp_path / row.teacher_path)
    assert stored["input_spec"]["input_shape"] == [1, 28, 28]
    assert stored["arch"]["kwargs"]["input_shape"] == [1, 28, 28]
    # with the image keys too (issue 29): a smoothness prior and shifts, a conv generator
    runs = {"bounded": ["strategy=bounded"], "random": ["strategy=random"],
            "images": ["strategy=bounded", "strategy.tv=1", "shift=2"],
            "conv": ["strategy=generator", "strategy.arch=conv", "strategy.channels=[4,2]"]}
    for strategy, keys in runs.items():
        dfkd_here("distill", *data, "student=cnn", *keys, "epochs=2",
                  "steps_per_epoch=3", "batch_size=8", "log_every=1", "progress=false",
                  f"hydra.run.dir={strategy}", cwd=tmp_path)
        metrics = pd.read_csv(tmp_path / strategy / "metrics.csv").iloc[0]
        assert metrics.status == "ok" and np.isfinite(metrics.student_rmse)
        history = pd.read_csv(tmp_path / strategy / "history.csv")
        assert len(history) == 2 and np.isfinite(history.loss).all()
        student = load_checkpoint(tmp_path / strategy / "student.pt")
        convolution = next(v for k, v in student["state_dict"].items() if k.endswith("weight"))
        assert isinstance(convolution, torch.Tensor) and convolution.dim() == 4  # Conv2d


def test_missing_mnist_folder_says_where_the_files_go(tmp_path):
    proc = dfkd_here("train-teacher", "dataset=mnist", f"data_dir={tmp_path}", cwd=tmp_path,
                     check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{tmp_path}/mnist" in lines[0] and "t10k-images-idx3-ubyte.gz" in lines[0]
    assert "<data_dir>/mnist/" in lines[0]


def test_probe_draws_images_and_prediction_histograms(tmp_path):
    """For an image-shaped dataset the probe writes a grid of each strategy's samples and the
    histogram of the teacher's predictions on them, in raw units."""
    import torch

    from dfkd_cli.data.datasets import load_table

    pytest.importorskip("matplotlib")
    fake_mnist(tmp_path)
    data = ["dataset=mnist", "data_dir=.", "dataset.n_train=200", "teacher.hidden=[16]"]
    dfkd_here("train-teacher", *data, "epochs=2", cwd=tmp_path)
    dfkd_here("probe", *data, "epochs=2", "samples=40", "batch_size=20", "images=3",
              "strategies.bounded.tv=1",  # an image key reaches the probe's strategies
              "~strategy@strategies.impressions", "~strategy@strategies.generator",
              "~strategy@strategies.lhs", "~strategy@strategies.sobol", "hydra.run.dir=probe",
              cwd=tmp_path)
    for name in ("probe_images.png", "probe_predictions.png"):
        assert (tmp_path / "probe" / name).read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(tmp_path / "probe" / "probe.csv").set_index("strategy")
    assert table.loc["bounded", "gap_mean"] > 0 and pd.isna(table.get("note", {}).get("bounded"))
    cfg = make_config("probe", [*data, f"data_dir={tmp_path}",
                                f"teacher_store={tmp_path / 'outputs/teachers'}"])
    table_rows = load_table(cfg.dataset, cfg.data_dir)
    teacher = load_teacher(cfg, [1], table_rows, torch.device("cpu"))
    part = member_splits(cfg, teacher, table_rows, [1], torch.device("cpu"))[0]
    with torch.no_grad():
        raw = teacher.module(part.x_test[None])[0, :, 0] * part.scaler.y_std + part.scaler.y_mean
    assert table.loc["test_rows", "pred_mean"] == pytest.approx(float(raw.mean()), rel=1e-4)
    assert table.loc["test_rows", "pred_sd"] == pytest.approx(float(raw.std()), rel=1e-3)
    no_figures = dfkd_here("probe", *data, "epochs=1", "samples=20", "batch_size=20",
                           "figures=false", "~strategy@strategies.impressions",
                           "hydra.run.dir=plain", cwd=tmp_path)
    assert no_figures.returncode == 0 and not (tmp_path / "plain" / "probe_images.png").exists()


def test_case_study_presets_are_the_case_studies_protocols():
    """experiment=protein, protein_mlp and mnist: the teachers, students, arms and protocol the
    case studies name; every swept arm keeps the preset's batch of 10 (protein)."""
    from test_report import sweep_params

    cfg, params = sweep_params("protein")
    assert params == {"arm": ["case_study_gaussian", "case_study_de"]}
    assert (cfg.dataset.name, cfg.teacher.format, cfg.student.name) == ("protein", "sklearn", "rbf")
    assert cfg.teacher.estimator._target_ == "sklearn.svm.SVR" and cfg.student.net.units == 100
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == (
        "rmsprop", 1e-3, 1e-6)
    assert (cfg.epochs, cfg.steps_per_epoch, cfg.domain, list(cfg.seeds)) == (
        1000, 100, "on", [1, 2, 3, 4, 5])
    mlp, mlp_params = sweep_params("protein_mlp")
    assert mlp_params["arm"] == ["case_study_gaussian", "case_study_de", "bounded_alpha1",
                                 "generator_alpha1"]
    assert mlp.teacher.name == "mlp" and list(mlp.teacher.hidden) == [500]
    for arm in mlp_params["arm"]:
        composed = make_config("distill", ["experiment=protein_mlp", f"arm={arm}"])
        assert composed.batch_size == 10 and composed.label == arm
        assert (composed.epochs, composed.student.name) == (1000, "rbf")


# per arm of experiment=mnist: (strategy, alpha schedule, alpha value, batch, prior, its own
# selection when the arm runs alone)
MNIST_ARMS = {
    "paper_random_sampling": ("random", "constant", 0.0, 100, "gaussian", "last"),
    "paper_generator": ("generator", "decreasing", None, 50, "gaussian", "last"),
    "paper_bounded": ("bounded", "decreasing", None, 50, "gaussian", "last"),
    "datafree": ("bounded", "decreasing", None, 50, "auto", "fidelity"),
    "real_kd": ("real_rows", "constant", 1.0, 100, "auto", "fidelity"),
    "real_data": ("real_rows", "constant", 1.0, 100, "auto", "fidelity"),
}


def test_the_mnist_preset_is_its_protocol():
    """experiment=mnist (issue 29): the four-layer cnn teacher, students that can learn digits
    (a four-layer cnn and an MLP), the paper's three arms with N(0, I) beside the product's recipe
    (the copula, prior=auto) and the real-data references, the paper's 2000 x 10 steps, 3 seeds;
    every job of the multirun as composed, so a preset key that overrode an arm's prior shows."""
    from test_report import sweep_params

    preset, params = sweep_params("mnist")
    assert params == {"student": ["cnn4", "mlp50"], "arm": list(MNIST_ARMS)}
    # the sweep's report pairs every arm with the paper's baseline (random sampling)
    assert preset.hydra.callbacks.sweep_summary.baseline == "paper_random_sampling"
    for student in params["student"]:
        for arm, (strategy, schedule, value, batch, prior, _) in MNIST_ARMS.items():
            cfg = make_config("distill", ["experiment=mnist", f"student={student}", f"arm={arm}"])
            validate(cfg)
            assert (cfg.dataset.name, cfg.teacher.name, list(cfg.teacher.net.channels)) == (
                "mnist", "cnn", [16, 32, 64, 64])
            assert (cfg.epochs, cfg.steps_per_epoch, cfg.stop, list(cfg.seeds)) == (
                2000, 10, "off", [1, 2, 3])
            assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == (
                "rmsprop", 1e-3, 1e-5)
            assert (cfg.label, cfg.strategy.name, cfg.alpha.schedule) == (arm, strategy, schedule)
            if strategy == "real_rows":  # fitted to the teacher / to the digits themselves
                assert cfg.strategy.labels == ("teacher" if arm == "real_kd" else "targets")
            assert value is None or cfg.alpha.value == value
            assert (cfg.batch_size, cfg.prior, cfg.domain, cfg.selection) == (
                batch, prior, "off", "all")  # all: every selection from one training
            if student == "cnn4":
                assert cfg.student.name == "cnn" and list(cfg.student.net.channels) == [
                    8, 16, 32, 32]  # four layers: the two-layer cnn cannot learn digits
            else:
                assert cfg.student.name == "mlp" and list(cfg.student.hidden) == [50]
    for arm, (*_, prior, selection) in MNIST_ARMS.items():  # the arm alone: its own recipe
        alone = make_config("distill", [f"arm={arm}"])
        assert (alone.prior, alone.selection, alone.label) == (prior, selection, arm)
