"""`dfkd evaluate`: raw-unit scores of checkpoints and exports checked against a direct
computation, the teacher's fidelity, several targets, and columns that are missing or bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import QUICK_DISTILL, dfkd_here
from test_export import explicit, hand_checkpoint

from dfkd_cli.commands import evaluate, export
from dfkd_cli.data import datasets as data
from dfkd_cli.errors import UserError
from dfkd_cli.nets import checkpoints
from dfkd_cli.teachers.raw_units import feature_names, target_names


def direct_scores(pred: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """RMSE, MAE and R^2 per column, in numpy."""
    residual = pred - y
    return {"rmse": np.sqrt((residual ** 2).mean(axis=0)), "mae": np.abs(residual).mean(axis=0),
            "r2": 1 - (residual ** 2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0)}


def predictions(path: Path, x: pd.DataFrame) -> np.ndarray:
    """The checkpoint's predictions on raw rows, computed with explicit scaling."""
    return explicit(checkpoints.load_checkpoint(path), torch.tensor(x.to_numpy())).numpy()


@pytest.fixture(scope="module")
def run_dir(workdir) -> Path:
    dfkd_here("distill", *QUICK_DISTILL, "strategy=random", "hydra.run.dir=evaluate_run",
              cwd=workdir)
    dfkd_here("export", "evaluate_run", "--formats", "torchscript", cwd=workdir)
    return workdir / "evaluate_run"


@pytest.fixture(scope="module")
def friedman_csv(run_dir) -> Path:
    """500 raw Friedman rows: the 10 features, then the target, named as the student says."""
    payload = checkpoints.load_checkpoint(run_dir / "student.pt")
    table = data.friedman1(8000, 1.0)
    frame = pd.DataFrame(table.x[6000:6500], columns=feature_names(payload) or table.features)
    frame[(target_names(payload) or ["y"])[0]] = table.y[6000:6500]
    path = run_dir / "friedman_test.csv"
    frame.to_csv(path, index=False)
    return path


def score(workdir: Path, *args: str) -> pd.DataFrame:
    """`dfkd evaluate ARGS --out scores.csv`, read back."""
    out = workdir / "scores.csv"
    dfkd_here("evaluate", *args, "--out", str(out), cwd=workdir)
    return pd.read_csv(out)


def teacher_of(run_dir: Path) -> Path:
    path = Path(checkpoints.load_checkpoint(run_dir / "student.pt")["metrics"]["teacher_path"])
    return path if path.is_absolute() else run_dir.parent / path


def test_checkpoint_and_its_torchscript_export_agree(workdir, run_dir, friedman_csv):
    ckpt = score(workdir, "--model", str(run_dir / "student.pt"), "--data", str(friedman_csv))
    ts = score(workdir, "--model", str(run_dir / "export" / "student.torchscript.pt"),
               "--data", str(friedman_csv))
    assert ckpt.loc[0, "kind"] == "dfkd-checkpoint" and ts.loc[0, "kind"] == "torchscript"
    for column in ("rmse", "mae", "r2"):
        assert ts.loc[0, column] == pytest.approx(ckpt.loc[0, column], rel=1e-5)
    assert ckpt.loc[0, "n_rows"] == 500


def test_scores_match_a_direct_computation(workdir, run_dir, friedman_csv):
    table = score(workdir, "--model", str(run_dir / "student.pt"), "--data", str(friedman_csv))
    frame = pd.read_csv(friedman_csv)
    pred = predictions(run_dir / "student.pt", frame.iloc[:, :-1])
    expected = direct_scores(pred, frame.iloc[:, -1:].to_numpy())
    for column, value in expected.items():
        assert table.loc[0, column] == pytest.approx(value[0], rel=1e-5)


def test_teacher_fidelity_matches_a_direct_computation(workdir, run_dir, friedman_csv):
    teacher = teacher_of(run_dir)
    table = score(workdir, "--model", str(run_dir / "student.pt"), "--teacher", str(teacher),
                  "--data", str(friedman_csv))
    assert list(table["model"]) == ["model", "teacher"]
    frame = pd.read_csv(friedman_csv)
    student = predictions(run_dir / "student.pt", frame.iloc[:, :-1])
    teacher_pred = predictions(teacher, frame.iloc[:, :-1])
    fidelity = np.sqrt(((student - teacher_pred) ** 2).mean())
    assert table.loc[0, "fidelity_rmse"] == pytest.approx(fidelity, rel=1e-5)
    assert table.loc[1, "rmse"] == pytest.approx(
        direct_scores(teacher_pred, frame.iloc[:, -1:].to_numpy())["rmse"][0], rel=1e-5)


def test_two_targets_give_per_output_columns(tmp_path):
    hand_checkpoint(tmp_path / "student.pt")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"b": rng.normal(-1, 0.5, 300), "f3": rng.normal(5, 10, 300),
                          "a": rng.normal(10, 4, 300), "note": 1.0,
                          "f1": rng.normal(1, 0.5, 300), "f2": rng.normal(-2, 3, 300)})
    frame.to_csv(tmp_path / "two.csv", index=False)
    table = evaluate.evaluate(tmp_path / "student.pt", tmp_path / "two.csv")
    expected = direct_scores(predictions(tmp_path / "student.pt", frame[["f1", "f2", "f3"]]),
                             frame[["a", "b"]].to_numpy())
    for name, values in expected.items():
        assert table.loc[0, f"{name}_a"] == pytest.approx(values[0], rel=1e-5)
        assert table.loc[0, f"{name}_b"] == pytest.approx(values[1], rel=1e-5)
        assert table.loc[0, name] == pytest.approx(values.mean(), rel=1e-5)


def test_a_missing_feature_column_exits_2_naming_it(workdir, run_dir, friedman_csv, tmp_path):
    frame = pd.read_csv(friedman_csv)
    third = frame.columns[2]
    frame.drop(columns=[third]).to_csv(tmp_path / "lacking.csv", index=False)
    proc = dfkd_here("evaluate", "--model", str(teacher_of(run_dir)), "--data",
                     str(tmp_path / "lacking.csv"), cwd=workdir, check=False)
    assert proc.returncode == 2, proc.stderr
    assert repr(third) in proc.stderr and "lacking.csv" in proc.stderr


@pytest.mark.parametrize("value, message", [("abc", "non-numeric"), ("", "missing")])
def test_bad_values_are_a_user_error(tmp_path, value, message):
    hand_checkpoint(tmp_path / "student.pt")
    frame = pd.DataFrame({"f1": ["1.0", value], "f2": [0.0, 1.0], "f3": [1.0, 2.0],
                          "a": [1.0, 2.0], "b": [0.0, 1.0]})
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match=f"{message}.*f1"):
        evaluate.evaluate(tmp_path / "student.pt", tmp_path / "bad.csv")


def test_a_model_of_another_width_is_a_user_error(tmp_path, friedman_csv):
    hand_checkpoint(tmp_path / "student.pt")
    export.export(tmp_path / "student.pt", tmp_path, ["torchscript"])
    model = tmp_path / "student.torchscript.pt"
    target = pd.read_csv(friedman_csv).columns[-1]
    with pytest.raises(UserError, match=f"{model} failed on the 10 feature columns of "
                                        f"{friedman_csv}"):
        evaluate.evaluate(model, friedman_csv, targets=[target])


def test_a_score_that_does_not_apply_prints_empty_not_nan(workdir, run_dir, friedman_csv):
    """The teacher's row has no fidelity: an empty cell, as the report prints one."""
    proc = dfkd_here("evaluate", "--model", str(run_dir / "student.pt"), "--teacher",
                     str(teacher_of(run_dir)), "--data", str(friedman_csv), cwd=workdir)
    assert "NaN" not in proc.stdout and "nan" not in proc.stdout.lower()
    assert proc.stdout.splitlines()[2].startswith("teacher")
