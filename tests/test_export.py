"""`dfkd export`: the folded exports against the student applied with explicit scaling, the
model card, the ONNX fallbacks, the tolerance check and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import QUICK_DISTILL, dfkd_here
from torch import nn

from dfkd_cli.commands import export
from dfkd_cli.nets import checkpoints, factory, mlp


def explicit(payload: dict, x: torch.Tensor) -> torch.Tensor:
    """The checkpoint's MLP on raw x in float64: (x - mean) / sd -> mlp -> y * sd + mean."""
    s = {k: torch.as_tensor(v, dtype=torch.float64).reshape(-1)
         for k, v in payload["scaler"].items()}
    model = factory.from_checkpoint(payload, None, "", "").double()
    with torch.no_grad():
        return model((x.double() - s["x_mean"]) / s["x_std"]) * s["y_std"] + s["y_mean"]


def raw_inputs(payload: dict, n: int = 2000, seed: int = 7) -> torch.Tensor:
    """Raw rows spread over three sd around the feature means."""
    s = payload["scaler"]
    noise = torch.randn(n, len(s["x_mean"]), generator=torch.Generator().manual_seed(seed))
    return s["x_mean"] + s["x_std"] * 3 * noise


def relative_error(pred: torch.Tensor, payload: dict, x: torch.Tensor) -> float:
    y_std = torch.as_tensor(payload["scaler"]["y_std"], dtype=torch.float64).reshape(-1)
    return float(((pred.double() - explicit(payload, x)).abs().amax(dim=0) / y_std).max())


def hand_checkpoint(path: Path, activation: str = "tanh") -> dict:
    """A 3-input, 2-output student with per-target scalers, features and targets recorded."""
    torch.manual_seed(3)
    net = mlp.mlp(3, [8, 5], activation, 2)
    checkpoints.save_checkpoint(
        path, net.state_dict(),
        arch={"input_dim": 3, "hidden": [8, 5], "activation": activation, "output_dim": 2},
        scaler={"x_mean": torch.tensor([1.0, -2.0, 5.0]), "x_std": torch.tensor([0.5, 3.0, 10.0]),
                "y_mean": torch.tensor([10.0, -1.0]), "y_std": torch.tensor([4.0, 0.5])},
        dataset="hand", seed=3, features=["f1", "f2", "f3"], targets=["a", "b"],
        metrics={"strategy": "random", "student_rmse": 0.25, "teacher_path": "t.pt"},
        config="seed: 3\nepochs: 6\n")
    return checkpoints.load_checkpoint(path)


@pytest.fixture(scope="module")
def run_dir(workdir) -> Path:
    dfkd_here("distill", *QUICK_DISTILL, "strategy=random", "hydra.run.dir=export_run", cwd=workdir)
    dfkd_here("export", "export_run", cwd=workdir)
    return workdir / "export_run"


@pytest.fixture(scope="module")
def payload(run_dir) -> dict:
    return checkpoints.load_checkpoint(run_dir / "student.pt")


def test_torchscript_equals_the_explicitly_scaled_student(run_dir, payload):
    x = raw_inputs(payload)
    model = torch.jit.load(str(run_dir / "export" / "student.torchscript.pt"))
    with torch.no_grad():
        assert relative_error(model(x), payload, x) < 1e-5


def test_onnx_equals_the_explicitly_scaled_student(run_dir, payload):
    onnxruntime = pytest.importorskip("onnxruntime")
    x = raw_inputs(payload)
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "student.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    (pred,) = session.run(["y"], {"x": x.numpy()})
    assert relative_error(torch.from_numpy(pred), payload, x) < 1e-5


def test_model_card_names_strategy_teacher_and_metrics(run_dir, payload):
    card = (run_dir / "export" / "model_card.md").read_text()
    metrics = payload["metrics"]
    assert "| strategy | random |" in card
    assert metrics["teacher_path"] in card
    assert f"| student_rmse | {metrics['student_rmse']:.6g} |" in card
    assert "student.torchscript.pt" in card and "torch.jit.load" in card


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "sigmoid", "silu"])
def test_folding_matches_explicit_scaling_for_two_outputs(tmp_path, activation):
    payload = hand_checkpoint(tmp_path / "student.pt", activation)
    model = export.raw_model(payload)
    assert not any(type(m).__module__.startswith("dfkd_cli") for m in model)
    x = raw_inputs(payload)
    with torch.no_grad():
        pred = model(x)
    assert pred.shape == (len(x), 2)
    assert relative_error(pred, payload, x) < 1e-5


def test_hand_checkpoint_exports_with_its_card(tmp_path):
    hand_checkpoint(tmp_path / "student.pt")
    assert export.main([str(tmp_path), "--formats", "torchscript", "--out",
                        str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "model_card.md").read_text()
    assert "| f2 | -2 | 3 |" in card and "2: a, b" in card
    assert "```yaml\nseed: 3\nepochs: 6\n```" in card


def test_a_wrong_export_fails_the_check(tmp_path, monkeypatch, capsys):
    hand_checkpoint(tmp_path / "student.pt")
    wrong = export.raw_model

    def shifted(payload: dict, net_target: str | None = None) -> nn.Sequential:
        model = wrong(payload, net_target)
        with torch.no_grad():
            model[-1].bias.add_(0.01)  # 0.01 / y_std >= 2.5e-3, above the 1e-4 tolerance
        return model

    monkeypatch.setattr(export, "raw_model", shifted)
    assert export.main([str(tmp_path / "student.pt"), "--formats", "torchscript"]) == 1
    assert "differs from the checkpoint" in capsys.readouterr().err


def test_onnx_requested_but_missing_names_the_extra(tmp_path, monkeypatch, capsys):
    hand_checkpoint(tmp_path / "student.pt")
    monkeypatch.setattr(export, "onnx_available", lambda: False)
    assert export.main([str(tmp_path / "student.pt"), "--formats", "onnx"]) == 2
    assert "pip install 'dfkd-cli[onnx]'" in capsys.readouterr().err
    assert export.main([str(tmp_path / "student.pt")]) == 0
    assert "onnx skipped" in capsys.readouterr().out
    assert not (tmp_path / "export" / "student.onnx").exists()


@pytest.mark.parametrize("name, content", [("missing.pt", None), ("junk.pt", "not a checkpoint"),
                                           ("empty_run", "")])
def test_bad_path_exits_2_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    if content == "":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    proc = dfkd_here("export", str(path), cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert name in proc.stderr and "Traceback" not in proc.stderr
