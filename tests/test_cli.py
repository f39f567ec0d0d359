"""The `dfkd` command: the installed one end to end in a subprocess (help, a run, exit codes), and
the rest through its entry point in this process (conftest.dfkd_here): its errors on bad input,
selections, sweeps, the teacher store."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import (
    DFKD,
    QUICK_DISTILL,
    QUICK_TEACHER,
    REPO,
    SHARED_DATA,
    TEACHER_RUN,
    dfkd,
    dfkd_here,
)

from dfkd_cli import cli
from dfkd_cli.nets.checkpoints import load_checkpoint
from dfkd_cli.utils import runtime

METRIC_COLUMNS = ["dataset", "seed", "strategy", "alpha", "selection", "teacher_rmse",
                  "student_rmse", "fidelity_rmse", "wall_s", "device", "status"]


def run_dir_of(root: Path, command: str) -> Path:
    dirs = sorted((root / "outputs" / command).glob("*/*"), key=lambda p: p.stat().st_mtime)
    return dirs[-1]


def test_help_lists_commands(tmp_path):
    out = dfkd("--help", cwd=tmp_path).stdout
    assert "train-teacher" in out and "distill" in out
    # `python -m dfkd_cli --help` prints the same, having imported none of torch, pandas and
    # hydra (seconds of start-up each on a loaded CPU): the commands are imported when they run
    code = ("import runpy, sys; sys.argv = ['dfkd', '--help']; "
            "runpy.run_module('dfkd_cli', run_name='__main__'); "
            "print([m for m in ('torch', 'pandas', 'hydra') if m in sys.modules])")
    module = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, check=True).stdout
    assert module == out + "[]\n"


def test_command_help_shows_groups(tmp_path):
    out = dfkd_here("distill", "--help", cwd=tmp_path).stdout
    for group in ("dataset=", "strategy=", "optimizer=", "alpha=", "student=", "teacher="):
        assert group in out
    assert "bounded" in out and "random" in out


def test_cfg_job_prints_config_and_runs_nothing(tmp_path):
    out = dfkd_here("distill", "strategy=random", "--cfg", "job", cwd=tmp_path).stdout
    assert "name: random" in out and "epochs: 8000" in out
    assert not (tmp_path / "outputs").exists()


def test_train_teacher_writes_store_and_metrics(workdir):
    path = workdir / "outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt"
    payload = load_checkpoint(path)
    assert payload["arch"]["input_dim"] == 10 and payload["seed"] == 1
    assert payload["input_spec"]["low"].shape == (10,)
    assert set(payload["scaler"]) == {"x_mean", "x_std", "y_mean", "y_std"}
    # the fixture's own run directory: other tests' train-teacher runs in workdir (which find the
    # teacher stored and say status=exists) cannot be read in its place
    metrics = pd.read_csv(workdir / TEACHER_RUN / "metrics.csv")
    assert metrics.loc[0, "status"] == "ok" and 0 < metrics.loc[0, "teacher_rmse"] < 1


# the installed command in a process of its own once, through its entry point in this one again
@pytest.mark.parametrize("strategy,selection,runner", [("random", "last", dfkd),
                                                       ("bounded", "val", dfkd_here)])
def test_distill_end_to_end(workdir, strategy, selection, runner):
    proc = runner("distill", f"strategy={strategy}", f"selection={selection}", *QUICK_DISTILL,
                  cwd=workdir)
    run_dir = run_dir_of(workdir, "distill")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert set(METRIC_COLUMNS) <= set(metrics.columns)
    row = metrics.iloc[0]
    assert (row.strategy, row.selection, row.status, row.device) == (strategy, selection, "ok",
                                                                     "cpu")
    assert 0 < row.student_rmse < 2 and 0 < row.fidelity_rmse < 2
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.epoch) == [1, 3, 5]
    assert {"loss", "loss_g", "loss_p", "alpha", "gap_mean"} <= set(history.columns)
    if selection == "val":
        assert "val_rmse" in history.columns
    student = load_checkpoint(run_dir / "student.pt")
    assert student["arch"]["hidden"] == [50]
    assert "student_rmse" in proc.stdout  # the table is printed


def test_selection_both_is_the_two_runs_in_one(workdir):
    """One training, two rows: each equals the run with that selection alone."""
    rows = {}
    for selection in ("last", "val", "both"):
        dfkd_here("distill", "strategy=bounded", f"selection={selection}", *QUICK_DISTILL,
                  f"hydra.run.dir=sel_{selection}", cwd=workdir)
        rows[selection] = pd.read_csv(workdir / f"sel_{selection}" / "metrics.csv")
    both = rows["both"].set_index("selection")
    assert list(both.index) == ["last", "val"]
    for selection in ("last", "val"):
        alone = rows[selection].iloc[0]
        for column in ("student_rmse", "fidelity_rmse", "selected_epoch", "fidelity_rmse_gaussian"):
            assert both.loc[selection, column] == alone[column]
    kept = load_checkpoint(workdir / "sel_both" / "student_val.pt")["state_dict"]
    alone = load_checkpoint(workdir / "sel_val" / "student.pt")["state_dict"]
    assert all(torch.equal(kept[k], alone[k]) for k in kept)


def test_multirun_two_jobs(workdir):
    dfkd_here("distill", "-m", "strategy=random,bounded", *QUICK_DISTILL, cwd=workdir)
    sweep = sorted((workdir / "outputs" / "distill-multirun").glob("*/*"))[-1]
    rows = pd.concat(pd.read_csv(p) for p in sorted(sweep.glob("*/metrics.csv")))
    assert sorted(rows.strategy) == ["bounded", "random"] and set(rows.status) == {"ok"}


def test_user_config_dir_adds_an_option(workdir, tmp_path):
    (tmp_path / "strategy").mkdir()
    (tmp_path / "strategy" / "bounded_k4.yaml").write_text(
        "defaults:\n  - bounded\n  - _self_\nsteps: 4\n")
    out = dfkd_here("distill", "--config-dir", str(tmp_path), "strategy=bounded_k4", "--cfg", "job",
                    cwd=workdir).stdout
    assert "steps: 4" in out and "name: bounded" in out


def error_of(*args: str, cwd: Path, env: dict | None = None, process: bool = False) -> str:
    """The one-line error of a run refused for bad input, with the documented exit code 2; in
    this process, or in a process of its own (`process`: the installed command's exit code)."""
    proc = (dfkd if process else dfkd_here)(*args, cwd=cwd, env=env, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stderr


@pytest.mark.parametrize("args,expected", [
    (["strategy=nope"], r"Could not find 'strategy/nope'.*Available options in 'strategy'.*bounded"),
    (["dataset=nope"], r"Could not find 'dataset/nope'.*Available options in 'dataset'.*cpusmall"),
    (["epochz=3"], r"Key 'epochz' not in 'DistillConfig'"),
    (["epochs=abc"], r"Value 'abc' .* could not be converted to Integer.*full_key: epochs"),
    (["epochs=0"], r"epochs=0 is not valid: expected an integer in \[1, 1000000\]"),
])
def test_bad_config_fails_before_work(tmp_path, args, expected):
    stderr = error_of("distill", *args, cwd=tmp_path, process=args == ["strategy=nope"])
    assert re.search(expected, stderr, re.S), stderr
    assert not list(tmp_path.glob("outputs/**/metrics.csv"))


def test_unknown_command(tmp_path):
    assert "valid commands: train-teacher, distill" in error_of("distil", cwd=tmp_path,
                                                                process=True)


def test_missing_data_file(tmp_path):
    stderr = error_of("train-teacher", "dataset=cpusmall", f"data_dir={tmp_path}", cwd=tmp_path)
    assert f"{tmp_path}/cpusmall.csv.gz not found" in stderr and "data_dir" in stderr
    assert stderr.count("\n") == 1


def test_missing_teacher_prints_the_command_that_makes_it(tmp_path):
    stderr = error_of("distill", "seed=7", cwd=tmp_path)
    assert "no teacher checkpoint at outputs/teachers/friedman/mlp500-tanh/seed7" in stderr
    assert "dfkd train-teacher dataset=friedman seed=7" in stderr


def test_teacher_input_dimension_must_match(workdir, tmp_path):
    csv = tmp_path / "three.csv"
    csv.write_text("a,b,c,y\n" + "".join(f"{i},{i % 5},{i % 7},{i % 3}\n" for i in range(400)))
    teacher = workdir / "outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt"
    stderr = error_of("distill", "dataset=csv", f"dataset.path={csv}", f"teacher.path={teacher}",
                      cwd=tmp_path)
    assert "takes 10 inputs but dataset 'csv' has 3 features" in stderr


def test_store_teacher_trained_on_another_split_is_refused(workdir, tmp_path):
    """The store is keyed by dataset, architecture and seed: a teacher trained with other split
    settings may have seen this run's test rows, so distill, probe and train-teacher say so."""
    for command, extra in (("distill", QUICK_DISTILL), ("probe", QUICK_DISTILL),
                           ("train-teacher", QUICK_TEACHER)):
        proc = dfkd_here(command, *extra, "dataset.n_train=300", cwd=workdir, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "mlp64-tanh/seed1/teacher.pt was trained on" in proc.stderr
        assert "dataset.n_train=300" in proc.stderr and "split it into 300 and" in proc.stderr
    # the same settings as the teacher's still work
    dfkd_here("distill", *QUICK_DISTILL, "dataset.n_train=5000", cwd=workdir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(workdir):
    stderr = error_of("distill", "device=cuda", *QUICK_DISTILL, cwd=workdir)
    assert "device=cuda but no CUDA GPU is available" in stderr


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/datasets")
def test_benchmark_through_data_dir_env(tmp_path):
    dfkd_here("train-teacher", "dataset=cpusmall", *QUICK_TEACHER, cwd=tmp_path,
              env={"DFKD_DATA_DIR": str(SHARED_DATA)})
    assert (tmp_path / "outputs/teachers/cpusmall/mlp64-tanh/seed1/teacher.pt").is_file()


def test_installed_command_is_the_one_under_test(tmp_path):
    """The `dfkd` the tests run is this checkout's: its interpreter imports dfkd_cli from here."""
    shebang = Path(DFKD).read_text().splitlines()[0]
    assert shebang.startswith("#!")
    where = subprocess.run([shebang[2:].strip(), "-c", "import dfkd_cli; print(dfkd_cli.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert Path(where.strip()).resolve().parent == REPO / "dfkd_cli"


def test_teacher_store_comes_from_the_environment(tmp_path):
    store = tmp_path / "elsewhere"
    dfkd_here("train-teacher", *QUICK_TEACHER, cwd=tmp_path, env={"DFKD_TEACHER_STORE": str(store)})
    assert (store / "friedman/mlp64-tanh/seed1/teacher.pt").is_file()
    assert not (tmp_path / "outputs/teachers").exists()
    stderr = error_of("distill", "seed=2", *QUICK_DISTILL, cwd=tmp_path,
                      env={"DFKD_TEACHER_STORE": str(store)})
    assert f"no teacher checkpoint at {store}/friedman/mlp64-tanh/seed2" in stderr


@pytest.mark.parametrize("threads,keep", [(3, True), (2, False)])
def test_threads_and_keep_freed_memory_are_applied(monkeypatch, tmp_path, threads, keep):
    """The CLI sets torch's threads and the allocator setting before the command runs."""
    seen = {"kept": False}

    def command(cfg, run_dir):
        seen["threads"] = torch.get_num_threads()

    monkeypatch.setitem(cli.COMMANDS, "distill", ("distill", command, ""))
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: seen.update(kept=True) or True)
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    try:
        cli.main(["distill", f"threads={threads}", f"keep_freed_memory={str(keep).lower()}",
                  f"hydra.run.dir={tmp_path}/run"])
    finally:
        torch.set_num_threads(before)
    assert seen == {"threads": threads, "kept": keep}


@pytest.mark.parametrize("field,value,expected", [
    ("format", "other-tool", "is not a dfkd checkpoint"),
    ("version", 99, "has format version 99; this dfkd reads version 1")])
def test_checkpoint_of_another_format_or_version_is_refused(workdir, tmp_path, field, value,
                                                            expected):
    payload = load_checkpoint(workdir / "outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt")
    payload[field] = value
    foreign = tmp_path / "teacher.pt"
    torch.save(payload, foreign)
    assert expected in error_of("distill", f"teacher.path={foreign}", *QUICK_DISTILL, cwd=workdir)
