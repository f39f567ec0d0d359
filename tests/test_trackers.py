"""The `logger=` group: TensorBoard event files and MLflow runs that say what metrics.csv and
history.csv say, one tracker run per population member, and a failing tracker that costs the run
nothing (dfkd_cli/tracking/trackers.py)."""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import pandas as pd
import pytest
from conftest import QUICK_DISTILL, QUICK_TEACHER, dfkd, dfkd_here, run_here

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the [tensorboard] extra is not installed")
mlflow = pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")

LOGGERS = "logger=[csv,tensorboard,mlflow]"


@pytest.fixture(scope="module")
def two_teachers(tmp_path_factory) -> Path:
    """A working directory whose store holds quick friedman teachers for seeds 1 and 2 (trained
    in this process)."""
    root = tmp_path_factory.mktemp("trackers")
    run_here("train-teacher", [*QUICK_TEACHER, "seeds=[1,2]"], root / "teachers", root)
    return root


def numeric_columns(row: pd.Series) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)}


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    assert list(run_dir.glob("events.out.tfevents.*")), f"no event file in {run_dir}"
    acc = event_accumulator.EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_runs(uri: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("dfkd")
    return client, client.search_runs([experiment.experiment_id])


def test_tensorboard_and_mlflow_say_what_the_csv_files_say(two_teachers, tmp_path):
    run, uri = tmp_path / "run", f"sqlite:///{tmp_path}/store/mlflow.db"
    dfkd_here("distill", *QUICK_DISTILL, LOGGERS, f"logger.mlflow.tracking_uri={uri}",
              f"hydra.run.dir={run}", cwd=two_teachers)
    row = pd.read_csv(run / "metrics.csv").iloc[0]
    history = pd.read_csv(run / "history.csv")
    assert row.status == "ok"

    scalars = tensorboard_scalars(run)
    assert scalars["student_rmse"] == [(row.epochs_run, pytest.approx(row.student_rmse, rel=1e-6))]
    assert [step for step, _ in scalars["loss"]] == list(history.epoch)
    assert [v for _, v in scalars["loss"]] == pytest.approx(list(history.loss), rel=1e-6)

    client, runs = mlflow_runs(uri)
    assert len(runs) == 1
    logged = runs[0]
    assert logged.info.status == "FINISHED"
    # a run's metrics: the final numbers, and each history column's last finite value
    last_logged = history.drop(columns="epoch").apply(lambda column: column.dropna().iloc[-1])
    assert logged.data.metrics == pytest.approx(numeric_columns(row) | dict(last_logged))
    params = logged.data.params
    assert (params["dataset.name"], params["strategy.name"], params["epochs"], params["seed"],
            params["student.hidden"]) == (row.dataset, row.strategy, str(row.epochs),
                                          str(row.seed), "[50]")
    loss = client.get_metric_history(logged.info.run_id, "loss")
    assert [m.step for m in loss] == list(history.epoch)
    assert [m.value for m in loss] == pytest.approx(list(history.loss))
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert artifacts == {"student.pt", "metrics.csv", "history.csv"}

    # `dfkd export --mlflow <uri>` of the run adds its files to the same MLflow run
    dfkd_here("export", str(run), "--formats", "torchscript", "--mlflow", uri, cwd=two_teachers)
    exported = {a.path for a in client.list_artifacts(logged.info.run_id, "export")}
    assert exported == {"export/student.torchscript.pt", "export/model_card.md"}


def test_a_population_is_one_run_per_member_nested_under_the_job(two_teachers, tmp_path):
    run, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    dfkd_here("distill", *QUICK_DISTILL, "seeds=[1,2]", LOGGERS,
              f"logger.mlflow.tracking_uri={uri}", f"hydra.run.dir={run}", cwd=two_teachers)
    _, runs = mlflow_runs(uri)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    members = {r.data.params["seed"]: r for r in runs if r not in parent}
    assert len(parent) == 1 and sorted(members) == ["1", "2"]
    for seed, member in members.items():
        assert member.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        row = pd.read_csv(run / f"seed{seed}" / "metrics.csv").iloc[0]
        assert member.data.metrics["student_rmse"] == pytest.approx(row.student_rmse)
        assert tensorboard_scalars(run / f"seed{seed}")["student_rmse"][0][1] == pytest.approx(
            row.student_rmse, rel=1e-6)
    assert parent[0].data.metrics["fidelity_rmse_gaussian"] == pytest.approx(
        sum(m.data.metrics["fidelity_rmse_gaussian"] for m in members.values()) / 2)


@pytest.mark.parametrize("selection,kept", [("both", ["last", "val"]),
                                            ("all", ["last", "fidelity", "val"])])
def test_each_selection_is_logged_under_its_own_name(two_teachers, tmp_path, selection, kept):
    """selection=both / all: one run, a metrics row per selection; the trackers get each row's
    numbers under <selection>/, so that no selection's numbers overwrite another's."""
    run, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    run_here("distill", [*QUICK_DISTILL, f"selection={selection}", LOGGERS,
                         f"logger.mlflow.tracking_uri={uri}"], run, two_teachers)
    rows = pd.read_csv(run / "metrics.csv").set_index("selection")
    assert list(rows.index) == kept
    _, runs = mlflow_runs(uri)
    [logged] = runs
    scalars = tensorboard_scalars(run)
    for name, row in rows.iterrows():
        for column in ("student_rmse", "selected_epoch", "fidelity_rmse_gaussian"):
            key = f"{name}/{column}"
            assert logged.data.metrics[key] == pytest.approx(row[column]), key
            assert scalars[key] == [(row.epochs_run, pytest.approx(row[column], rel=1e-6))], key
    assert "student_rmse" not in logged.data.metrics and "student_rmse" not in scalars


# in a process of its own: the broken install is a package on the subprocess's PYTHONPATH
@pytest.mark.parametrize("fault", ["broken install", "unwritable store"])
def test_a_failing_tracker_warns_once_and_the_run_and_its_csv_files_stay(two_teachers, tmp_path,
                                                                         fault):
    env, uri = {}, f"sqlite:///{tmp_path}/mlflow.db"
    if fault == "broken install":
        fake = tmp_path / "site" / "mlflow"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("raise ImportError('mlflow is broken here')\n")
        env["PYTHONPATH"] = str(fake.parent)
    else:  # a store below a plain file: no one, root included, can create it
        (tmp_path / "plain").write_text("")
        uri = f"sqlite:///{tmp_path}/plain/store/mlflow.db"
    run = tmp_path / "run"
    proc = dfkd("distill", *QUICK_DISTILL, "seeds=[1,2]", LOGGERS,
                f"logger.mlflow.tracking_uri={uri}", f"hydra.run.dir={run}", cwd=two_teachers,
                env=env)
    assert (proc.stdout + proc.stderr).count("logger mlflow disabled") == 1
    for seed in (1, 2):
        member = run / f"seed{seed}"
        assert pd.read_csv(member / "metrics.csv").status.iloc[0] == "ok"
        assert len(pd.read_csv(member / "history.csv")) == 3
        assert (member / "student.pt").is_file()
        assert "student_rmse" in tensorboard_scalars(member)  # the other tracker carried on


# issue 24, item 2: no tracker acts unless configured in the command; an unreachable one costs
# seconds


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_run(folder: Path, tracking_uri: str) -> Path:
    """A run directory holding a small MLP student.pt and an mlflow_run.json naming
    `tracking_uri` (what a crafted or copied run directory could hold)."""
    import json

    import torch

    from dfkd_cli.nets.checkpoints import save_checkpoint
    from dfkd_cli.nets.mlp import mlp

    folder.mkdir(parents=True)
    arch = {"name": "mlp", "input_dim": 3, "output_dim": 1, "hidden": [4], "activation": "tanh"}
    save_checkpoint(folder / "student.pt", mlp(3, [4], "tanh", 1).state_dict(), arch,
                    scaler={"x_mean": torch.zeros(3), "x_std": torch.ones(3),
                            "y_mean": torch.zeros(1), "y_std": torch.ones(1)})
    (folder / "mlflow_run.json").write_text(
        json.dumps({"tracking_uri": tracking_uri, "run_id": "0123456789abcdef"}))
    return folder


def test_export_never_reaches_the_store_its_run_directory_names(tmp_path, closed_port):
    import time

    from dfkd_cli.commands import export

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for n, uri in enumerate([f"sqlite:///{elsewhere}/mlflow.db",
                             f"http://127.0.0.1:{closed_port}"]):
        run = small_run(tmp_path / f"run{n}", uri)
        started = time.perf_counter()
        assert export.main([str(run), "--formats", "torchscript"]) == 0
        assert time.perf_counter() - started < 30
        assert list(elsewhere.iterdir()) == []  # no database, no artifacts


def test_an_unreachable_tracker_costs_seconds_and_one_warning(tmp_path, closed_port, caplog):
    import time

    from omegaconf import OmegaConf

    from dfkd_cli.commands import export
    from dfkd_cli.tracking.trackers import Trackers

    uri = f"http://127.0.0.1:{closed_port}"
    cfg = OmegaConf.create({"seed": 1, "logger": {"mlflow": {
        "_target_": "dfkd_cli.tracking.trackers.MLflow", "tracking_uri": uri}}})
    run = small_run(tmp_path / "run", uri)
    started = time.perf_counter()
    with Trackers(cfg.logger, OmegaConf.to_container(cfg), [1], [run]) as trackers:
        trackers.history([[{"epoch": 0, "loss": 1.0}]])
        assert trackers.active == {}  # dropped at the start; the run goes on without it
    assert time.perf_counter() - started < 10
    assert caplog.text.count("logger mlflow disabled") == 1
    assert "cannot be reached" in caplog.text
    # export --mlflow <that server>: the exports are written, one warning, seconds
    caplog.clear()
    started = time.perf_counter()
    assert export.main([str(run), "--formats", "torchscript", "--mlflow", uri]) == 0
    assert time.perf_counter() - started < 30
    assert caplog.text.count("exports not logged to MLflow") == 1
    assert (run / "export" / "student.torchscript.pt").is_file()
