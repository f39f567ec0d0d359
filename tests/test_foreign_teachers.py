"""Teachers from elsewhere (TorchScript, torch.export, ONNX) with an input spec, and
multi-output regression through train-teacher and distill."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import QUICK_DISTILL, dfkd_here, load_teacher, make_config
from torch import nn

from dfkd_cli.data.datasets import Scaler, friedman1
from dfkd_cli.errors import UserError
from dfkd_cli.nets import checkpoints, factory, metrics
from dfkd_cli.teachers import spec as teacher_spec

QUICK = ["epochs=6", "steps_per_epoch=3", "log_every=2", "progress=false"]


def raw_friedman_model(rows: int = 2000, steps: int = 300) -> tuple[nn.Module, dict]:
    """A model as a user brings it: trained on raw Friedman features and targets, not by dfkd.
    Returns it with the spec its owner would know (feature means, sds and ranges)."""
    table = friedman1(rows, 1.0, seed=5)
    x, y = torch.tensor(table.x, dtype=torch.float32), torch.tensor(table.y, dtype=torch.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    with torch.no_grad():
        model[2].bias.fill_(float(y.mean()))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    spec = {"features": table.features, "mean": x.mean(0).tolist(), "sd": x.std(0).tolist(),
            "low": x.min(0).values.tolist(), "high": x.max(0).values.tolist()}
    return model.eval(), spec


def write_spec_yaml(path, spec: dict) -> None:
    lines = [f"{k}: [{', '.join(repr(v) if isinstance(v, str) else f'{v:.9g}' for v in values)}]"
             for k, values in spec.items()]
    path.write_text("\n".join(lines) + "\n")


def test_torchscript_teacher_to_exported_student_end_to_end(tmp_path):
    """A non-dfkd model -> TorchScript -> distilled with bounded -> exported -> evaluated on a
    CSV: the export scores what the PyTorch student scores."""
    model, spec = raw_friedman_model()
    torch.jit.script(model).save(str(tmp_path / "teacher.ts"))
    write_spec_yaml(tmp_path / "spec.yaml", spec)
    dfkd_here("distill", "teacher=torchscript", "teacher.path=teacher.ts", "teacher.spec=spec.yaml",
              "strategy=bounded", "strategy.clip_to_box=true", *QUICK, "hydra.run.dir=run",
              cwd=tmp_path)
    row = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.teacher_path == "teacher.ts"
    assert row.teacher_r2 > 0.5  # the dataset's raw rows reach the teacher through its spec
    payload = checkpoints.load_checkpoint(tmp_path / "run" / "student.pt")
    torch.testing.assert_close(payload["scaler"]["x_mean"], torch.tensor(spec["mean"]))
    assert payload["features"] == spec["features"]

    dfkd_here("export", "run", "--formats", "torchscript", cwd=tmp_path)
    table = friedman1(500, 1.0, seed=11)  # rows the teacher never saw, in raw units
    frame = pd.DataFrame(table.x, columns=table.features).assign(y=table.y[:, 0])
    frame.to_csv(tmp_path / "check.csv", index=False)
    out = tmp_path / "scores.csv"
    dfkd_here("evaluate", "--model", "run/export/student.torchscript.pt", "--data", "check.csv",
              "--out", str(out), cwd=tmp_path)
    exported = pd.read_csv(out).iloc[0]
    # the PyTorch student, applied by hand: standardise, the checkpoint's MLP, unstandardise
    scaler = Scaler.from_payload(payload["scaler"])
    with torch.no_grad():
        z = factory.from_checkpoint(payload, None, "", "")(
            scaler.standardise_x(torch.tensor(table.x).float()))
    pred = (z * scaler.y_std + scaler.y_mean).double()
    y = torch.tensor(table.y)
    assert exported.rmse == pytest.approx(float(metrics.rmse(pred, y)), rel=1e-5)
    assert exported.mae == pytest.approx(float(metrics.mae(pred, y)), rel=1e-5)
    assert exported.r2 == pytest.approx(float(metrics.r2(pred, y)), rel=1e-5)


def test_spec_in_units_and_estimated_output_scaler(tmp_path):
    """T(z) = (net(mean + sd z) - y_mean) / y_sd, with y_mean / y_sd estimated on prior draws."""
    model, spec = raw_friedman_model(steps=50)
    torch.jit.script(model).save(str(tmp_path / "t.ts"))
    pd.DataFrame({"feature": spec["features"], "mean": spec["mean"], "sd": spec["sd"]}).to_csv(
        tmp_path / "spec.csv", index=False)
    cfg = make_config("distill", ["teacher=torchscript", f"teacher.path={tmp_path / 't.ts'}",
                                  f"teacher.spec={tmp_path / 'spec.csv'}"])
    teacher = load_teacher(cfg, [1, 2], None, torch.device("cpu"))
    assert (teacher.input_dim, teacher.output_dim, teacher.box) == (10, 1, None)
    z = torch.randn(2, 5000, 10, generator=torch.Generator().manual_seed(1))
    out = teacher.module(z)
    assert abs(float(out.mean())) < 0.05 and abs(float(out.std()) - 1) < 0.05
    mean, sd = torch.tensor(spec["mean"]), torch.tensor(spec["sd"])
    scaler = teacher.scalers[0]
    with torch.no_grad():
        raw = model(mean + sd * z[0])
    torch.testing.assert_close(out[0], (raw - scaler.y_mean) / scaler.y_std)


def test_torch_export_file_loads_as_a_teacher(tmp_path):
    model, spec = raw_friedman_model(steps=20)
    program = torch.export.export(model, (torch.rand(4, 10),),
                                  dynamic_shapes=({0: torch.export.Dim("rows")},))
    torch.export.save(program, str(tmp_path / "t.pt2"))
    cfg = make_config("distill", ["teacher=torchscript", f"teacher.path={tmp_path / 't.pt2'}",
                                  "teacher.input_dim=10"])
    teacher = load_teacher(cfg, [1], None, torch.device("cpu"))
    assert teacher.differentiable and teacher.output_dim == 1
    x = torch.randn(1, 7, 10)
    saved = teacher.module.trace(x)  # the gradient strategies' path works through autograd
    assert teacher.module.input_grad(saved, torch.ones_like(saved[-1])).shape == x.shape


def test_spec_errors_name_the_problem(tmp_path):
    base = ["teacher=torchscript", "teacher.path=t.ts"]
    cfg = make_config("distill", base + ["teacher.mean=[0,0]", "teacher.sd=[1,1,1]"])
    with pytest.raises(UserError, match="per-feature keys differ in length"):
        teacher_spec.read(cfg.teacher).input_dim()
    cfg = make_config("distill", base + ["teacher.sd=[1,0]"])
    with pytest.raises(UserError, match=r"teacher.sd=.*expected finite numbers > 0"):
        teacher_spec.read(cfg.teacher)
    # issue 24, item 6: NaN or zero where a scale must be, NaN bounds, refused by key
    (tmp_path / "nan.yaml").write_text("sd: [.nan, 1]\nmean: [0, 0]\n")
    for spec, message in [("nan.yaml", r"teacher.sd=\[nan, 1\] is not valid"),
                          ("zero.yaml", r"teacher.target_sd=\[0\] is not valid"),
                          ("low.yaml", r"teacher.low=\[nan, 0\] is not valid")]:
        if spec == "zero.yaml":
            (tmp_path / spec).write_text("target_mean: [1]\ntarget_sd: [0]\n")
        if spec == "low.yaml":
            (tmp_path / spec).write_text("low: [.nan, 0]\nhigh: [1, 1]\n")
        cfg = make_config("distill", base + [f"teacher.spec={tmp_path / spec}"])
        with pytest.raises(UserError, match=message):
            teacher_spec.read(cfg.teacher)
    (tmp_path / "five.yaml").write_text("features: 5\n")  # item 7: was a traceback
    cfg = make_config("distill", base + [f"teacher.spec={tmp_path / 'five.yaml'}"])
    with pytest.raises(UserError, match="teacher.features=5 is not valid: expected a list"):
        teacher_spec.read(cfg.teacher)
    (tmp_path / "bad.csv").write_text("feature,median\na,1\n")
    cfg = make_config("distill", base + [f"teacher.spec={tmp_path / 'bad.csv'}"])
    with pytest.raises(UserError, match=r"unknown columns \['median'\]"):
        teacher_spec.read(cfg.teacher)
    model, _ = raw_friedman_model(steps=1)
    torch.jit.script(model).save(str(tmp_path / "t.ts"))
    with pytest.raises(UserError, match="input dimension of .* is unknown"):
        load_teacher(make_config("distill", ["teacher=torchscript",
                                              f"teacher.path={tmp_path / 't.ts'}"]),
                      [1], None, torch.device("cpu"))


def onnx_teacher(folder: Path) -> list[str]:
    """A raw-units friedman teacher as teacher.onnx + spec.yaml in `folder`; its overrides."""
    pytest.importorskip("onnxruntime")
    model, spec = raw_friedman_model()
    torch.onnx.export(model, (torch.rand(4, 10),), str(folder / "teacher.onnx"),
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "rows"}, "y": {0: "rows"}}, dynamo=False)
    write_spec_yaml(folder / "spec.yaml", spec)
    return ["teacher=onnx", "teacher.path=teacher.onnx", "teacher.spec=spec.yaml"]


def test_onnx_teacher_distils_with_evolution_and_refuses_bounded(tmp_path):
    onnx = onnx_teacher(tmp_path)
    dfkd_here("distill", *onnx, "strategy=evolution", *QUICK, "hydra.run.dir=evo", cwd=tmp_path)
    row = pd.read_csv(tmp_path / "evo" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.strategy == "evolution" and row.teacher_r2 > 0.5
    refused = dfkd_here("distill", *onnx, "strategy=bounded", *QUICK, "hydra.run.dir=bounded",
                        cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert ("strategy=bounded needs the teacher's gradients, and teacher teacher.onnx cannot "
            "be differentiated") in refused.stderr
    assert "evolution, lhs, random, real_rows, sobol, uniform" in refused.stderr
    assert not (tmp_path / "bounded" / "student.pt").exists()


def test_differentiable_false_refuses_gradient_strategies_for_any_teacher(workdir):
    for strategy in ("generator", "impressions"):
        proc = dfkd_here("distill", *QUICK_DISTILL, f"strategy={strategy}",
                         "teacher.differentiable=false", "hydra.run.dir=nograd", cwd=workdir,
                         check=False)
        assert proc.returncode == 2 and f"strategy={strategy} needs the teacher's" in proc.stderr


def test_two_output_dataset_trains_and_distils_two_outputs(tmp_path):
    table = friedman1(3000, 0.5, seed=9)
    frame = pd.DataFrame(table.x, columns=table.features)
    frame["y1"] = table.y[:, 0]
    frame["y2"] = 3 * table.x[:, 0] - 2 * table.x[:, 5] ** 2
    frame.to_csv(tmp_path / "two.csv", index=False)
    data = ["dataset=csv", "dataset.path=two.csv", "dataset.name=two",
            "dataset.target=[y1,y2]", "dataset.n_train=2000", "teacher.hidden=[64]"]
    dfkd_here("train-teacher", *data, "epochs=20", "batch_size=64", "progress=false",
              "hydra.run.dir=teacher", cwd=tmp_path)
    teacher_row = pd.read_csv(tmp_path / "teacher" / "metrics.csv").iloc[0]
    assert teacher_row.teacher_r2_y1 > 0.5 and teacher_row.teacher_r2_y2 > 0.5
    dfkd_here("distill", *data, "strategy=bounded", *QUICK, "hydra.run.dir=student", cwd=tmp_path)
    row = pd.read_csv(tmp_path / "student" / "metrics.csv").iloc[0]
    for name in ("student_rmse", "fidelity_rmse", "student_r2", "teacher_rmse"):
        assert row[name] == pytest.approx((row[f"{name}_y1"] + row[f"{name}_y2"]) / 2)
    payload = torch.load(tmp_path / "student" / "student.pt", weights_only=True)
    assert payload["arch"]["output_dim"] == 2 and payload["targets"] == ["y1", "y2"]
    wrong = dfkd_here("distill", *data[:3], "dataset.target=y1", "dataset.drop=[y2]",
                      "teacher.hidden=[64]", *QUICK,
                      "hydra.run.dir=wrong", cwd=tmp_path, check=False)
    assert wrong.returncode == 2 and "has 2 outputs but dataset 'two' has 1 target" in wrong.stderr


def test_no_data_at_all(tmp_path):
    """dataset=none: the data-free case end to end; fidelity is measured on prior draws."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2))
    torch.jit.script(net).save(str(tmp_path / "t.ts"))
    spec = ["teacher=torchscript", "teacher.path=t.ts", "teacher.targets=[price,volume]",
            "teacher.mean=[1,2,3,4,5]", "teacher.sd=[1,1,2,2,3]"]
    dfkd_here("distill", "dataset=none", *spec, "strategy=bounded", *QUICK, "hydra.run.dir=run",
              cwd=tmp_path)
    row = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.dataset == "none" and "student_rmse" not in row
    assert 0 < row.fidelity_rmse_gaussian_price and 0 < row.fidelity_rmse_gaussian_volume
    payload = checkpoints.load_checkpoint(tmp_path / "run" / "student.pt")
    assert payload["targets"] == ["price", "volume"] and payload["features"] == [
        f"x{i}" for i in range(1, 6)]
    for args, message in [(["selection=val"], "selection=val picks an epoch by validation"),
                          (["epochs=0"], "epochs=0 is not valid")]:
        proc = dfkd_here("distill", "dataset=none", *spec, *args, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and message in proc.stderr
    proc = dfkd_here("train-teacher", "dataset=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "dataset=none has no rows" in proc.stderr
