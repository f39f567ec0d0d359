"""Datasets: the built-in table, CSV loading, the paper's split and its scalers."""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, load_split, make_config

from dfkd_cli.data.datasets import friedman1, read_csv, split
from dfkd_cli.errors import UserError


def test_builtin_dataset_is_deterministic():
    a, b = friedman1(500, 1.0), friedman1(500, 1.0)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x.shape == (500, 10)


def test_a_wide_friedman_table_is_friedman_one_with_noise_features():
    """dataset.n_features widens Friedman #1 (the wide-input benchmark): the target is the same
    function of the first five features; the rest are noise; `friedman_wide` is 500 x 20000."""
    wide = friedman1(300, 0.0, n_features=40)
    x = wide.x
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3]
         + 5 * x[:, 4])
    assert x.shape == (300, 40) and wide.features[-1] == "x40"
    np.testing.assert_allclose(wide.y[:, 0], y, rtol=0, atol=1e-12)
    cfg = make_config("distill", ["dataset=friedman_wide"]).dataset
    assert (cfg.n_features, cfg.n_rows, cfg.name) == (500, 20000, "friedman_wide")


def test_split_sizes_and_training_only_scalers():
    table = friedman1(8000, 1.0)
    s = split(table, n_train=5000, val_fraction=0.1, seed=3)
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (5000, 300, 2700)
    # standardised with the training rows' statistics: train is exactly 0 / 1, the rest is not
    torch.testing.assert_close(s.x_train.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.x_train.std(0, unbiased=False), torch.ones(10), atol=1e-4,
                               rtol=0)
    assert abs(float(s.y_train.mean())) < 1e-5 and abs(float(s.y_test.mean())) > 1e-4
    raw_test_y = s.y_test[:, 0].double().numpy() * float(s.scaler.y_std) + float(s.scaler.y_mean)
    assert np.abs(raw_test_y[:, None] - table.y[None, :, 0]).min(axis=1).max() < 1e-4


def test_split_depends_on_seed_only():
    table = friedman1(2000, 1.0)
    a, b, c = (split(table, 1000, 0.1, seed) for seed in (1, 1, 2))
    torch.testing.assert_close(a.x_test, b.x_test)
    assert not torch.equal(a.x_test, c.x_test)


def test_small_dataset_trains_on_fewer_rows(caplog):
    caplog.set_level(logging.INFO)
    s = split(friedman1(1000, 1.0), n_train=5000, val_fraction=0.1, seed=1)
    assert len(s.x_train) == 700 and len(s.x_val) + len(s.x_test) == 300
    assert "training on 700 rows instead of 5000" in caplog.text


def test_csv_target_and_drop(tmp_path):
    path = tmp_path / "data.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("a,id,y,b\n" + "".join(f"{i},{i * 7},{2 * i},{i % 3}\n" for i in range(20)))
    table = read_csv(path, "mine", target="y", drop=["id"])
    assert table.features == ["a", "b"] and table.x.shape == (20, 2)
    np.testing.assert_array_equal(table.y, 2 * np.arange(20)[:, None])
    assert table.targets == ["y"]


def test_csv_several_targets(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("a,y1,b,y2\n" + "".join(f"{i},{2 * i},{i % 3},{-i}\n" for i in range(20)))
    table = read_csv(path, "two", target=["y2", "y1"], drop=[])
    assert table.features == ["a", "b"] and table.targets == ["y2", "y1"]
    np.testing.assert_array_equal(table.y, np.stack([-np.arange(20), 2 * np.arange(20)], 1))
    s = split(table, n_train=10, val_fraction=0.5, seed=0)
    assert s.y_train.shape == (10, 2) and s.scaler.y_std.shape == (2,)
    torch.testing.assert_close(s.y_train.mean(0), torch.zeros(2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("content,message", [
    ("a,b\n1,x\n2,y\n", "non-numeric columns"),
    ("a,b\n1,2\n,3\n", "missing or infinite values"),
    # issue 24, item 6: a column beyond float32 stored a NaN teacher with status ok; a constant
    # target gave teacher_r2=-inf with status ok
    ("a,b\n1e39,2\n2,3\n", r"values beyond float32's range .* in columns \['a'\]"),
    ("a,b\n1,2\n2,2\n", r"the target columns \['b'\] are constant"),
])
def test_bad_csv_is_a_user_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_csv(path, "bad", None, [])


def test_unknown_target_names_the_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=r"dataset.target='y' is not a column .*\['a', 'b'\]"):
        read_csv(path, "d", "y", [])


def test_missing_benchmark_says_where_to_put_it(tmp_path):
    cfg = make_config("distill", ["dataset=pole", f"data_dir={tmp_path}"])
    with pytest.raises(UserError, match=r"pole.csv.gz not found.*data_dir=.*DFKD_DATA_DIR"):
        load_split(cfg)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/datasets")
def test_benchmark_split_matches_the_paper():
    cfg = make_config("distill", ["dataset=cpusmall", f"data_dir={SHARED_DATA}"])
    s = load_split(cfg)
    # 8192 rows: 5000 train, 3192 rest -> 319 validation, 2873 test; 12 features
    assert (len(s.x_train), len(s.x_val), len(s.x_test), s.input_dim) == (5000, 319, 2873, 12)


def test_too_few_rows_for_a_split_is_a_user_error():
    with pytest.raises(UserError, match="too few for a train / validation / test split"):
        split(friedman1(3, 1.0), n_train=5000, val_fraction=0.1, seed=1)


def test_a_teacher_that_diverges_is_reported_and_not_stored(tmp_path, monkeypatch):
    """Issue 24, item 6: a NaN teacher was stored with status=ok (seed 2's weights made NaN
    after its fit; seed 1's is stored as usual)."""
    from dfkd_cli.commands import train_teacher
    fit = train_teacher.fit

    def nan_second_member(*args, **kwargs):
        model, *rest = fit(*args, **kwargs)
        with torch.no_grad():
            for p in model.params:
                p[1].fill_(float("nan"))
        return (model, *rest)

    monkeypatch.setattr(train_teacher, "fit", nan_second_member)
    cfg = make_config("train_teacher", ["seeds=[1,2]", "epochs=2", "dataset.n_rows=300",
                                        "teacher.hidden=[8]", f"teacher_store={tmp_path / 's'}"])
    rows = train_teacher.run(cfg, tmp_path / "run")
    assert list(rows.status) == ["ok", "diverged"]
    assert [p.parent.name for p in (tmp_path / "s").rglob("teacher.pt")] == ["seed1"]
