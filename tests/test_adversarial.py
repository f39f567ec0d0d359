"""What an adversarial try of dfkd broke (issue 16), one test or more per item, so it stays fixed:
bad input is one line and exit 2, crafted files never run code, a resume or a teacher that does
not fit the run is refused, and a sweep's report keeps apart what the sweep varied."""

from __future__ import annotations

import gzip
import json
import os
import shlex
import sys
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from conftest import QUICK_DISTILL, QUICK_TEACHER, dfkd, dfkd_here, load_teacher, one_line_error
from omegaconf import OmegaConf

from dfkd_cli.commands import report
from dfkd_cli.errors import UserError
from dfkd_cli.nets.checkpoints import load_checkpoint
from dfkd_cli.report.write import write_report

TINY = ["epochs=2", "steps_per_epoch=2", "log_every=1", "teacher.hidden=[64]", "progress=false"]
STORE_TEACHER = Path("outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt")


def labelled_csv(path: Path, rows: int = 300, features: int = 10) -> Path:
    """A CSV of `features` columns x1.. and a target y."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(rows, features, generator=gen, dtype=torch.float64)
    frame = pd.DataFrame(x.numpy(), columns=[f"x{i + 1}" for i in range(features)])
    frame["y"] = x.sum(dim=1).numpy()
    frame.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------
# 1. the report with a diverged run (empty error cell) beside a failed one


def test_report_renders_a_diverged_run_beside_a_failed_one(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    rows = [{"status": "diverged", "diverged_epoch": 4, "seed": 1},
            {"status": "failed", "error": "ValueError: boom", "seed": 2},
            {"status": "ok", "seed": 3, "student_rmse": 0.5, "teacher_rmse": 0.2}]
    for job, row in enumerate(rows):
        (sweep / str(job)).mkdir(parents=True)
        pd.DataFrame([{"command": "distill", "dataset": "friedman", "arm": "random_sampling",
                       "student_hidden": "mlp50-tanh", "selection": "last"} | row]
                     ).to_csv(sweep / str(job) / "metrics.csv", index=False)
    assert report.main([str(sweep), "--quiet"]) == 0
    markdown = (sweep / "report.md").read_text()
    assert "ValueError: boom" in markdown and "| nan |" not in markdown
    assert "diverged" in markdown and "\\bottomrule" in (sweep / "report.tex").read_text()


# ---------------------------------------------------------------------------------------------
# 2. a torch.export archive is loaded only where the user asked for one


def crafted_torch_export(path: Path, marker: Path) -> Path:
    """A real torch.export archive of a Linear(3, 1) whose weights config says `use_pickle` and
    whose weight file is a pickle that touches `marker` when unpickled."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    clean = path.with_suffix(".clean")
    torch.export.save(torch.export.export(torch.nn.Linear(3, 1), (torch.zeros(2, 3),)), clean)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                config["config"]["weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif item.filename.endswith("data/weights/weight_0"):
                buffer = path.with_suffix(".payload")
                torch.save(Payload(), buffer)
                data = buffer.read_bytes()
            dst.writestr(item, data)
    return path


def test_evaluate_never_loads_a_torch_export_archive_unasked(tmp_path):
    marker = tmp_path / "pwned"
    evil = crafted_torch_export(tmp_path / "student.pt", marker)
    data = labelled_csv(tmp_path / "data.csv", features=3)
    for flag in ("--model", "--teacher"):
        args = ["--model", str(evil)] if flag == "--model" else [
            "--model", str(evil), "--teacher", str(evil)]
        proc = dfkd_here("evaluate", *args, "--data", str(data), cwd=tmp_path, check=False)
        one_line_error(proc, "torch.export", "can run code", "--allow-torch-export")
        assert not marker.exists()
    # the file really is an exploit: loading it as torch.export runs the payload
    dfkd_here("evaluate", "--model", str(evil), "--data", str(data), "--allow-torch-export",
              cwd=tmp_path, check=False)
    assert marker.exists()


def test_onnx_teacher_and_export_check_refuse_a_torch_export_archive(workdir, tmp_path):
    from dfkd_cli.teachers.model_files import load_model_file

    marker = tmp_path / "pwned"
    evil = crafted_torch_export(tmp_path / "model.onnx", marker)
    proc = dfkd_here("distill", "dataset=none", "teacher=onnx", f"teacher.path={evil}",
                     "strategy=random", *TINY[:-2], cwd=workdir, check=False)
    one_line_error(proc, "torch.export", "can run code")
    with pytest.raises(UserError, match="can run code"):
        load_model_file(evil, ("torchscript",))  # as `dfkd export` checks its own files
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# 3. bad input of every kind: one line and exit 2, never a traceback


def test_truncated_gz_for_evaluate(workdir, tmp_path):
    data = labelled_csv(tmp_path / "data.csv")
    packed = gzip.compress(data.read_bytes())
    cut = tmp_path / "data.csv.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    proc = dfkd_here("evaluate", "--model", str(workdir / STORE_TEACHER), "--data", str(cut),
                     cwd=tmp_path, check=False)
    one_line_error(proc, "data.csv.gz", "not a readable CSV")


def test_no_feature_columns_left(tmp_path):
    csv = labelled_csv(tmp_path / "data.csv", features=2)
    for drop, needle in (("[x1,x2]", "no feature columns left"),
                         ("[x1,x2,y]", "drops every column")):
        proc = dfkd_here("train-teacher", "dataset=csv", f"dataset.path={csv}",
                         f"dataset.drop={drop}", *QUICK_TEACHER, cwd=tmp_path, check=False)
        one_line_error(proc, needle)


@pytest.mark.parametrize("override, key", [
    ("seed=-1", "seed="), ("seed=4294967296", "seed="), ("seeds=[-2,3]", "seeds="),
    ("seeds=[]", "seeds="), ("epochs=100000000000000000000", "epochs=")])
def test_seeds_and_epochs_out_of_range(override, key):
    from conftest import make_config

    from dfkd_cli.config import validate

    with pytest.raises(UserError, match=key):
        validate(make_config("distill", [override]))


def test_empty_seeds_is_refused_on_the_command_line(workdir):
    proc = dfkd_here("distill", "seeds=[]", *TINY, cwd=workdir, check=False)
    one_line_error(proc, "seeds=[]", "non-empty")


def test_foreign_files_as_checkpoints(workdir, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint\n" * 20)
    csv = labelled_csv(tmp_path / "data.csv")
    proc = dfkd_here("distill", f"teacher.path={text}", *TINY, cwd=workdir, check=False)
    one_line_error(proc, "notes.txt", "does not load with weights only")
    proc = dfkd_here("export", str(csv), cwd=tmp_path, check=False)
    one_line_error(proc, "data.csv", "does not load with weights only")


def broken_teachers(good: dict) -> dict[str, dict]:
    """Payloads that load with weights only but lack keys or have wrong shapes or types."""
    wrong_shape = {**good, "state_dict": {**good["state_dict"],
                                          "0.weight": torch.zeros(3, 3)}}
    no_scaler = {k: v for k, v in good.items() if k != "scaler"}
    wrong_type = {**good, "arch": {**good["arch"], "hidden": "many"}}
    no_spec = {k: v for k, v in good.items() if k != "input_spec"}
    short_scaler = {**good, "scaler": {**good["scaler"], "x_mean": torch.zeros(2)}}
    return {"wrong_shape": wrong_shape, "no_scaler": no_scaler, "wrong_type": wrong_type,
            "no_input_spec": no_spec, "short_scaler": short_scaler}


def test_checkpoints_with_missing_keys_or_wrong_shapes(workdir, tmp_path):
    good = load_checkpoint(workdir / STORE_TEACHER)
    for name, payload in broken_teachers(good).items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        if name != "no_input_spec":  # a student has none: every loader checks the rest
            with pytest.raises(UserError, match="incomplete or damaged"):
                load_checkpoint(path)
    # as teacher.path, and in the store
    proc = dfkd_here("distill", f"teacher.path={tmp_path / 'wrong_shape.pt'}", *TINY, cwd=workdir,
                     check=False)
    one_line_error(proc, "wrong_shape.pt", "incomplete or damaged")
    store = tmp_path / "store"
    target = store / STORE_TEACHER.relative_to("outputs/teachers")
    target.parent.mkdir(parents=True)
    target.write_bytes((tmp_path / "no_input_spec.pt").read_bytes())
    proc = dfkd_here("distill", f"teacher_store={store}", *TINY, cwd=workdir, check=False)
    one_line_error(proc, "not a teacher checkpoint", "input_spec")
    # as checkpoint.pt for resume
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 3, "student": {"w": torch.zeros(2)}}, run / "checkpoint.pt")
    proc = dfkd_here("distill", *TINY, "resume=true", f"hydra.run.dir={run}", cwd=workdir,
                     check=False)
    one_line_error(proc, "checkpoint.pt", "does not fit this run")


def test_yaml_syntax_error_in_the_teacher_spec(tmp_path):
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 1)), str(model))
    spec = tmp_path / "spec.yaml"
    spec.write_text("features: [a, b\nmean: {oops\n")
    proc = dfkd_here("distill", "dataset=none", "teacher=torchscript", f"teacher.path={model}",
                     f"teacher.spec={spec}", "strategy=random", *TINY[:3], cwd=tmp_path,
                     check=False)
    one_line_error(proc, "spec.yaml", "not valid YAML")


@pytest.fixture
def read_only():
    """Make folders read-only for this process: chmod for a normal user; for root (whom chmod
    does not stop), a read-only bind mount, or a skip where mounting is not allowed."""
    undo = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            mode = folder.stat().st_mode
            folder.chmod(0o555)
            undo.append(lambda: folder.chmod(mode))
            return folder
        import subprocess

        if subprocess.run(["mount", "--bind", str(folder), str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("running as root without permission to mount a read-only folder")
        undo.append(lambda: subprocess.run(["umount", str(folder)], check=True))
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        return folder

    yield make
    for step in reversed(undo):
        step()


def test_read_only_run_directory_store_and_out(workdir, tmp_path, read_only):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    proc = dfkd_here("distill", *TINY, f"hydra.run.dir={locked}/run", cwd=workdir, check=False)
    one_line_error(proc, "cannot write the output directory", "hydra.run.dir")
    proc = dfkd_here("report", str(workdir / "outputs"), "--out", str(locked / "report"),
                     cwd=workdir, check=False)
    one_line_error(proc, "locked")
    # a teacher already in a read-only store is found and kept (no lock file needed)
    store = tmp_path / "store"
    target = store / STORE_TEACHER.relative_to("outputs/teachers")
    target.parent.mkdir(parents=True)
    target.write_bytes((workdir / STORE_TEACHER).read_bytes())
    read_only(store)
    dfkd_here("train-teacher", *QUICK_TEACHER, f"teacher_store={store}",
              f"hydra.run.dir={tmp_path}/teach", cwd=tmp_path)
    assert pd.read_csv(tmp_path / "teach/metrics.csv").status.iloc[0] == "exists"
    proc = dfkd_here("train-teacher", *QUICK_TEACHER, "seed=2", f"teacher_store={store}",
                     f"hydra.run.dir={tmp_path}/teach2", cwd=tmp_path, check=False)
    one_line_error(proc, "store")


def test_full_disk_is_one_line(tmp_path):
    from dfkd_cli.utils.files import atomic_path

    target = tmp_path / "student.pt"
    with pytest.raises(UserError, match="could not write .*student.pt.*disk full"):
        with atomic_path(target):  # torch.save's own message: "... unexpected pos ..."
            torch.save({"w": torch.zeros(100_000)}, "/dev/full")
    with pytest.raises(UserError, match="could not write .*student.pt.*No space left"):
        with atomic_path(target), open("/dev/full", "w") as full:
            full.write("x" * 100_000)
            full.flush()
    assert not target.exists() and not list(tmp_path.iterdir())


def test_out_of_memory_names_batch_size(workdir):
    proc = dfkd_here("distill", "strategy=random", "batch_size=1000000000000", *TINY, cwd=workdir,
                     check=False)
    one_line_error(proc, "out of memory", "lower batch_size (now 1000000000000)")


# ---------------------------------------------------------------------------------------------
# 4. a dataset name is a plain name, never a path out of the teacher store


@pytest.mark.parametrize("name", ["/abs/dir", "../../x", "a/b"])
def test_dataset_name_cannot_leave_the_store(tmp_path, name):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    csv = labelled_csv(tmp_path / "data.csv")
    proc = dfkd_here("train-teacher", "dataset=csv", f"dataset.path={csv}", f"dataset.name={name}",
                     *QUICK_TEACHER, cwd=work, check=False)
    one_line_error(proc, "dataset.name=", "plain name")
    assert not list(tmp_path.rglob("teacher.pt"))


# ---------------------------------------------------------------------------------------------
# 5. resume refuses a config that changes the result, and keeps the run's .hydra/ files


RESUMABLE = ["strategy=random", "epochs=20", "steps_per_epoch=2", "log_every=5",
             "checkpoint_every=5", "teacher.hidden=[64]", "progress=false"]
# long enough that a real signal to a real process arrives before the run ends, also on a
# quiet machine (600 epochs took 2.3 s there: one job could finish before the other's first
# checkpoint; 3000 take about 11 s)
RESUMABLE_LONG = ["epochs=3000" if a == "epochs=20" else a for a in RESUMABLE]


def test_resume_refuses_a_changed_config(workdir, tmp_path, monkeypatch):
    import signal

    from dfkd_cli.utils import runtime

    run = tmp_path / "run"

    class TermAtTheFirstCheckpoint(runtime.Interrupts):
        """A SIGTERM that arrives once the run has written its first checkpoint (a real signal
        to a real process: test_reliability.py)."""

        def __call__(self) -> bool:
            if self.received is None and (run / "checkpoint.pt").exists():
                self.received = signal.SIGTERM
            return super().__call__()

    with monkeypatch.context() as patch:
        patch.setattr(runtime, "Interrupts", TermAtTheFirstCheckpoint)
        proc = dfkd_here("distill", *RESUMABLE, f"hydra.run.dir={run}", cwd=workdir,
                         check=False)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert pd.read_csv(run / "metrics.csv").status.iloc[0] == "interrupted"
    config = (run / ".hydra/config.yaml").read_text()
    overrides = (run / ".hydra/overrides.yaml").read_text()
    hydra_yaml = (run / ".hydra/hydra.yaml").read_text()  # issue 24, item 4d: every file
    for change, key in (("seed=2", "seed: 1 -> 2"), ("batch_size=7", "batch_size: 50 -> 7"),
                        ("student=mlp25", "student.hidden"), ("optimizer=adam", "optimizer.name"),
                        ("selection=val", "selection"), ("seeds=[1,2]", "seeds")):
        proc = dfkd_here("distill", *RESUMABLE, change, "resume=true", f"hydra.run.dir={run}",
                         cwd=workdir, check=False)
        one_line_error(proc, key, "progress")
        assert (run / ".hydra/config.yaml").read_text() == config, change
        assert (run / ".hydra/overrides.yaml").read_text() == overrides, change
        assert (run / ".hydra/hydra.yaml").read_text() == hydra_yaml, change
    # keys that do not change the result may differ; the run then ends
    dfkd_here("distill", *RESUMABLE,
              "checkpoint_every=50", "threads=2", "resume=true", f"hydra.run.dir={run}",
              cwd=workdir)
    assert pd.read_csv(run / "metrics.csv").status.iloc[0] == "ok"
    # a finished run, resumed with another seed, is refused too (its student.pt keeps the config)
    proc = dfkd_here("distill", *RESUMABLE, "seed=3", "resume=true", f"hydra.run.dir={run}",
                     cwd=workdir, check=False)
    one_line_error(proc, "seed: 1 -> 3")


# ---------------------------------------------------------------------------------------------
# 6. a teacher file trained on other data is refused unless the user says so


def test_teacher_path_for_other_data_is_refused(workdir, tmp_path):
    teacher = workdir / STORE_TEACHER  # friedman, seed 1
    proc = dfkd_here("distill", f"teacher.path={teacher}", "seed=2", *TINY, cwd=workdir,
                     check=False)
    one_line_error(proc, "seed 1 (this run: 2)", "teacher.allow_mismatch=true")
    csv = labelled_csv(tmp_path / "other.csv")
    other = ["dataset=csv", f"dataset.path={csv}", "dataset.name=other"]
    proc = dfkd_here("distill", f"teacher.path={teacher}", *other, *TINY, cwd=workdir, check=False)
    one_line_error(proc, "dataset 'friedman' (this run: 'other')")
    dfkd_here("distill", f"teacher.path={teacher}", "seed=2", "teacher.allow_mismatch=true", *TINY,
              f"hydra.run.dir={tmp_path}/allowed", cwd=workdir)
    dfkd_here("distill", f"teacher.path={teacher}", "seed=1", *TINY, cwd=workdir)  # its own data


# ---------------------------------------------------------------------------------------------
# 7. the missing-teacher hint is a command that works, store and CSV keys included


def test_missing_teacher_hint_for_a_csv_dataset_works(tmp_path):
    csv = labelled_csv(tmp_path / "good.csv", rows=200, features=3)
    store = tmp_path / "my store"
    run = ["dataset=csv", f"dataset.path={csv}", "dataset.name=good", "dataset.drop=[x3]",
           f"teacher_store={store}", *TINY]
    proc = dfkd_here("distill", *run, cwd=tmp_path, check=False)
    one_line_error(proc, "train it first with: dfkd train-teacher")
    hint = proc.stderr.split("train it first with: ", 1)[1].strip()
    assert "teacher_store=" in hint and "dataset.drop=[x3]" in hint
    command = shlex.split(hint)
    assert command[:2] == ["dfkd", "train-teacher"]
    dfkd_here(*command[1:], "epochs=3", "batch_size=64", "progress=false", cwd=tmp_path)
    dfkd_here("distill", *run, cwd=tmp_path)


# ---------------------------------------------------------------------------------------------
# 8-10. sweeps: what varied stays apart; failed jobs fail the command; blown-up runs are flagged


def test_report_keeps_swept_values_apart(workdir, tmp_path):
    sweep = tmp_path / "lr"
    dfkd_here("distill", "-m", "optimizer.lr=1e-3,1e-2", *TINY, f"hydra.sweep.dir={sweep}",
              cwd=workdir)
    table = pd.read_csv(sweep / "report.csv")
    assert sorted(table["optimizer.lr"]) == [0.001, 0.01] and list(table.n) == [1, 1]
    assert "superseded" not in (sweep / "report.md").read_text()
    # --by any config key, read from each job's saved config
    result = write_report([sweep], tmp_path / "by", by=["optimizer.momentum",
                                                               "student.activation"])
    assert list(result["table"]["student.activation"]) == ["tanh", "tanh"]
    assert list(result["table"]["optimizer.momentum"]) == ["0.0", "0.0"]
    # issue 24, item 8: the figures of split cells (one arm, two lr values: duplicate labels
    # crashed them), and a --by key that no run has is an error, not an empty column
    written = write_report([sweep], tmp_path / "plots", plots=True)["written"]
    assert (tmp_path / "plots" / "plots" / "rmse_friedman.png") in written
    with pytest.raises(UserError, match="--by optimizer.lrr: no run has such a metrics column"):
        write_report([sweep], tmp_path / "bad", by=["optimizer.lrr"])


def test_sweep_with_failed_diverged_and_blown_up_jobs(workdir, tmp_path):
    sweep = tmp_path / "bad"
    proc = dfkd_here("distill", "-m", "optimizer.lr=1e30,-1,1e3", "epochs=10", "steps_per_epoch=2",
                     "log_every=5", "teacher.hidden=[64]", "progress=false",
                     f"hydra.sweep.dir={sweep}", cwd=workdir, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "1 of 3 jobs failed" in proc.stderr and (sweep / "report.md").is_file()
    assert "summary not written" not in proc.stderr + proc.stdout  # item 1
    assert dfkd_here("report", str(sweep), "-q", cwd=workdir).returncode == 0
    rows = {float(OmegaConf.load(p.parent / ".hydra/config.yaml").optimizer.lr):
            pd.read_csv(p).iloc[0] for p in sweep.glob("*/metrics.csv")}
    diverged, blown_up = rows[1e30], rows[1e3]
    assert rows[-1].status == "failed"
    assert diverged.status == "diverged" and diverged.selected_epoch == -1
    assert "untrained start" in diverged.note
    assert blown_up.status == "unstable" and blown_up.prior_ratio > 10


def test_a_healthy_run_is_not_flagged(workdir, tmp_path):
    dfkd_here("distill", *QUICK_DISTILL, f"hydra.run.dir={tmp_path}", cwd=workdir)
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.prior_ratio < 1


class Silent(torch.optim.SGD):
    """An optimiser whose constructor fails with an empty message."""

    def __init__(self, params, **kwargs):
        raise ValueError()


def test_an_error_without_a_message_is_named_by_its_type():
    from dfkd_cli.nets.optim import make_optimizer

    cfg = OmegaConf.create({"_target_": f"{__name__}.Silent", "name": "sgd", "lr": 0.1,
                            "weight_decay": 0.0, "momentum": 0.0})
    with pytest.raises(UserError, match=r"^optimizer Silent does not take .*: ValueError$"):
        make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])


# ---------------------------------------------------------------------------------------------
# issue 24, item 1: a checkpoint's architecture is data; no reader builds code a file names

HARMLESS = "harmless_net.Net"  # a class the user may name (--net-target, teacher.net._target_)


def payload_modules(folder: Path, marker: Path) -> Path:
    """A module folder: harmless_net (a plain network) and dfkd_payload, whose import touches
    `marker` (what a crafted `target` would make dfkd import)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "harmless_net.py").write_text(
        "import torch\n\n\nclass Net(torch.nn.Module):\n"
        "    def __init__(self, input_dim, output_dim, **kwargs):\n"
        "        super().__init__()\n        self.lin = torch.nn.Linear(input_dim, output_dim)\n\n"
        "    def forward(self, x):\n        return self.lin(x)\n")
    (folder / "dfkd_payload.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom harmless_net import Net\n")
    return folder


def crafted_checkpoints(folder: Path, marker: Path) -> dict[str, Path]:
    """Teacher checkpoints (they load with weights only) whose architecture would run code: an
    unknown name with a target, and a custom network of the harmless class whose keyword
    arguments hold a nested `_target_` (builtins.open with mode 'w'; torch.load with
    weights_only=False on a pickle that touches the marker; pathlib.Path.touch)."""
    from dfkd_cli.nets.checkpoints import save_checkpoint

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    pickle = folder / "payload.pkl"
    torch.save(Payload(), pickle)
    custom = {"name": "custom", "target": HARMLESS, "input_dim": 3, "output_dim": 1}
    archs = {
        "unknown_name": {"name": "evil", "target": "dfkd_payload.Net", "input_dim": 3,
                         "output_dim": 1, "kwargs": {}},
        "custom_payload": custom | {"target": "dfkd_payload.Net", "kwargs": {}},
        "nested_open": custom | {"kwargs": {"width": 4, "opts": {
            "_target_": "builtins.open", "file": str(marker), "mode": "w"}}},
        "nested_pickle": custom | {"kwargs": {"layers": [1, {"deep": {
            "_target_": "torch.load", "f": str(pickle), "weights_only": False}}]}},
        "nested_touch": custom | {"kwargs": {"p": {
            "_target_": "pathlib.Path.touch", "_args_": [{"_target_": "pathlib.Path",
                                                          "_args_": [str(marker)]}]}}},
    }
    state = {"lin.weight": torch.zeros(1, 3), "lin.bias": torch.zeros(1)}
    scaler = {"x_mean": torch.zeros(3), "x_std": torch.ones(3), "y_mean": torch.zeros(1),
              "y_std": torch.ones(1)}
    spec = {"features": ["x1", "x2", "x3"], "low": torch.zeros(3), "high": torch.ones(3)}
    paths = {}
    for name, arch in archs.items():
        paths[name] = folder / name / "teacher.pt"
        save_checkpoint(paths[name], state, arch, scaler=scaler, input_spec=spec,
                        features=spec["features"], targets=["y"], dataset="friedman", seed=1)
    return paths


@pytest.fixture
def crafted(tmp_path, monkeypatch):
    """(checkpoints by shape, the marker, the module folder, a 3-feature CSV); the module folder
    is on sys.path in this process, as PYTHONPATH would put it for a subprocess."""
    marker = tmp_path / "pwned"
    mods = payload_modules(tmp_path / "mods", marker)
    monkeypatch.syspath_prepend(str(mods))
    yield (crafted_checkpoints(tmp_path, marker), marker, mods,
           labelled_csv(tmp_path / "data.csv", rows=50, features=3))
    for name in ("dfkd_payload", "harmless_net"):
        sys.modules.pop(name, None)


def _in_store(store: Path, evil: Path) -> Path:
    """A store for `dfkd distill teacher=custom teacher.net._target_=harmless_net.Net` holding
    `evil` where that teacher for seed 1 lives."""
    from conftest import make_config

    from dfkd_cli.commands.records import teacher_store

    cfg = make_config("distill", [f"teacher_store={store}", "teacher=custom",
                                  f"teacher.net._target_={HARMLESS}"])
    target = teacher_store(cfg).path(1)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(evil.read_bytes())
    return target


def test_crafted_architectures_run_nothing_in_any_reader(crafted, tmp_path):
    from conftest import make_config

    from dfkd_cli.commands import distill, evaluate, export

    paths, marker, _, csv = crafted
    safe = tmp_path / "safe.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 1)), str(safe))
    for shape, evil in paths.items():
        for named in ([], ["--net-target", HARMLESS]):
            assert evaluate.main(["--model", str(evil), "--data", str(csv), *named]) == 2
            assert evaluate.main(["--model", str(safe), "--teacher", str(evil), "--data",
                                  str(csv), *named]) == 2
            assert export.main([str(evil), "--out", str(tmp_path / "x"), *named]) == 2
        teacher = ["teacher=custom", f"teacher.net._target_={HARMLESS}"]
        for overrides in ([*teacher, f"teacher.path={evil}"],
                          [*teacher, f"teacher_store={tmp_path / 'store' / shape}"]):
            _in_store(tmp_path / "store" / shape, evil)
            with pytest.raises(UserError, match="arch|custom network"):
                load_teacher(make_config("distill", overrides), [1], None, torch.device("cpu"))
        run = tmp_path / "runs" / shape  # a finished run asked to resume: its student.pt
        run.mkdir(parents=True)
        (run / "student.pt").write_bytes(evil.read_bytes())
        pd.DataFrame([{"status": "ok"}]).to_csv(run / "metrics.csv", index=False)
        if shape == "custom_payload":  # read for its config only: nothing is built
            distill.stored_run(run / "checkpoint.pt", [run])
        else:
            with pytest.raises(UserError, match="arch"):
                distill.stored_run(run / "checkpoint.pt", [run])
        assert not marker.exists(), shape
        assert "dfkd_payload" not in sys.modules, shape


def test_crafted_architectures_exit_2_from_the_command_line(crafted, tmp_path):
    paths, marker, mods, csv = crafted
    env = {"PYTHONPATH": str(mods)}
    evil = paths["nested_open"]
    named = ["--net-target", HARMLESS]
    teacher = ["teacher=custom", f"teacher.net._target_={HARMLESS}", "dataset=none",
               "strategy=random", *TINY[:3]]
    store = tmp_path / "store"
    _in_store(store, paths["nested_pickle"])
    # three readers here (each subprocess costs seconds); every reader and shape in-process above
    for args in (["evaluate", "--model", str(evil), "--data", str(csv), *named],
                 ["export", str(paths["nested_touch"]), *named],
                 ["distill", *teacher, f"teacher_store={store}"]):
        proc = dfkd(*args, cwd=tmp_path, env=env, check=False)
        one_line_error(proc, "arch")
        assert not marker.exists(), args


TARGET_NAMES = ("builtins.open", "os.system", "torch.load", "dfkd_payload.Net",
                "pathlib.Path.touch", HARMLESS)


def _nested_target(depth: int, target: str, filler: Any) -> Any:
    """A `_target_` entry `depth` containers down (dicts and lists in turn)."""
    node: Any = {"_target_": target, "file": "x", "mode": "w"}
    for level in range(depth):
        node = {"k": node, "other": filler} if level % 2 else [filler, node]
    return node


def test_no_architecture_imports_anything_whatever_its_nesting(monkeypatch, tmp_path):
    """Property: an architecture with a `_target_` anywhere (any name, depth or place, a custom
    class named or not) is refused, and reading or building it imports nothing."""
    import importlib

    import hydra._internal.utils as hydra_utils
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from dfkd_cli.nets import factory

    imported: list[str] = []
    real_import = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: imported.append(name) or real_import(name, *a))
    monkeypatch.setattr(hydra_utils, "_locate", lambda path: imported.append(path))
    plain = st.one_of(st.integers(-5, 5), st.text(max_size=4), st.booleans(),
                      st.lists(st.integers(0, 9), max_size=3))

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=st.sampled_from(["mlp", "rbf", "resmlp", "cnn", "custom", "evil"]),
           target=st.sampled_from(TARGET_NAMES), depth=st.integers(0, 6),
           where=st.sampled_from(["kwarg", "top", "hidden", "target"]), filler=plain,
           kwargs=st.dictionaries(st.sampled_from(["units", "width", "a"]), plain, max_size=2))
    def check(name, target, depth, where, filler, kwargs):
        arch: dict[str, Any] = {"name": name, "input_dim": 3, "output_dim": 1,
                                "kwargs": dict(kwargs), "hidden": [4], "activation": "tanh"}
        if name == "custom":
            arch["target"] = HARMLESS
        nested = _nested_target(depth, target, filler)
        if where == "kwarg":
            arch["kwargs"]["nested"] = nested
        elif where == "top":
            arch["extra"] = nested
        elif where == "hidden":
            arch["hidden"] = [4, nested]
        else:
            arch["target"] = nested
        imported.clear()
        before = set(sys.modules)
        payload = {"arch": arch, "state_dict": {}}
        with pytest.raises(UserError):
            factory.from_checkpoint(payload, HARMLESS, "--net-target", "crafted")
        with pytest.raises(UserError):
            factory.make_module(arch)
        assert imported == [] and set(sys.modules) == before, (imported, set(sys.modules) - before)

    check()


# ---------------------------------------------------------------------------------------------
# issue 24, item 3: every value in the teacher store's key is a plain token; a custom class's
# module is part of it


TRAVERSALS = [(["teacher=rbf", "+teacher.net.tag=../../.."], "teacher.net.tag="),
              (["teacher=resmlp", "teacher.net.width=../.."], "teacher.net.width="),
              (["teacher=custom", "teacher.net._target_=a.Wide", "+teacher.net.x=a/b"],
               "teacher.net.x="),
              (["teacher=svr", "+teacher.estimator.kernel=../.."], "teacher.estimator.kernel=")]


@pytest.mark.parametrize("overrides, key", TRAVERSALS)
def test_store_key_values_cannot_leave_the_store(overrides, key, tmp_path):
    from conftest import make_config

    from dfkd_cli.commands.records import teacher_store

    cfg = make_config("train_teacher", [f"teacher_store={tmp_path / 'store'}", *overrides])
    with pytest.raises(UserError, match=f"^{key}.*plain token"):
        teacher_store(cfg).path(1)


def test_store_key_traversal_writes_nothing_outside_the_store(tmp_path):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    proc = dfkd("train-teacher", "teacher=resmlp", "+teacher.net.tag=../../..",
                *QUICK_TEACHER[:2], "teacher_store=store", "hydra.run.dir=run", cwd=work,
                check=False)
    one_line_error(proc, "teacher.net.tag=../../..", "plain token")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all((work / "run") in p.parents for p in written), written


def test_custom_classes_of_one_name_in_two_modules_have_their_own_store_folders(tmp_path):
    from conftest import make_config

    from dfkd_cli.commands.records import teacher_store

    paths = [teacher_store(make_config("train_teacher", [
        "teacher=custom", f"teacher.net._target_={module}.Wide", "+teacher.net.width=16"])).path(1)
        for module in ("a", "b")]
    assert paths[0] != paths[1]
    assert [p.parts[-3] for p in paths] == ["a.Wide-width16", "b.Wide-width16"]


# ---------------------------------------------------------------------------------------------
# issue 24, item 4: no run is lost without a word


def test_report_out_that_is_a_file_is_refused(tmp_path, capsys):
    sweep = tmp_path / "sweep" / "0"
    sweep.mkdir(parents=True)
    pd.DataFrame([{"command": "distill", "dataset": "friedman", "arm": "random_sampling",
                   "student_hidden": "mlp50-tanh", "selection": "last", "seed": 1,
                   "status": "ok", "student_rmse": 0.5, "teacher_rmse": 0.2}]
                 ).to_csv(sweep / "metrics.csv", index=False)
    existing = tmp_path / "notes.txt"
    existing.write_text("mine\n")
    assert report.main([str(sweep.parent), "--out", str(existing), "-q"]) == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "sweep"]
    assert existing.read_text() == "mine\n"


def test_rerun_over_a_resumable_checkpoint_is_refused(workdir, tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    before = {name: f"{name}: as the interrupted run left it\n"
              for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
    for name, text in before.items():
        (run / ".hydra" / name).write_text(text)
    torch.save({"epoch": 3, "run_config": {"config": "seed: 1\n"}}, run / "checkpoint.pt")
    kept = (run / "checkpoint.pt").read_bytes()
    proc = dfkd("distill", *TINY, f"hydra.run.dir={run}", cwd=workdir, check=False)
    one_line_error(proc, "checkpoint.pt", "resume=true", "overwrite=true")
    assert (run / "checkpoint.pt").read_bytes() == kept
    assert {p.name: p.read_text() for p in (run / ".hydra").iterdir()} == before  # item 4d
    assert not (run / "metrics.csv").exists()
    dfkd("distill", *TINY, "overwrite=true", f"hydra.run.dir={run}", cwd=workdir)
    assert pd.read_csv(run / "metrics.csv").status.iloc[0] == "ok"
    assert not (run / "checkpoint.pt").exists()  # the new run finished: its state is gone


def test_a_second_process_in_one_run_directory_is_refused(workdir, tmp_path):
    import subprocess

    from dfkd_cli.utils.files import hold_run_lock

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom dfkd_cli.utils.files import "
         f"hold_run_lock\nhold_run_lock({str(run)!r})\nprint('held', flush=True)\n"
         "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = dfkd("distill", *TINY, f"hydra.run.dir={run}", cwd=workdir, check=False)
        one_line_error(proc, str(run), "in use by another dfkd process", f"pid {holder.pid}")
        assert not (run / ".hydra").exists() and not (run / "metrics.csv").exists()
        with pytest.raises(UserError, match="in use by another dfkd process"):
            hold_run_lock(run)
    finally:
        holder.kill()
        holder.wait()
    hold_run_lock(run)  # free once the holder is gone (the kernel released its lock)
    hold_run_lock(run)  # and taking it twice in one process is a no-op


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_to_a_joblib_sweep_stops_its_workers_and_the_sweep_resumes(workdir, tmp_path):
    import signal
    import subprocess
    import time

    from conftest import DFKD

    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    args = ["distill", "-m", "optimizer.lr=1e-3,2e-3", *RESUMABLE_LONG,
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]
    with open(tmp_path / "launcher.log", "w") as log:
        launcher = subprocess.Popen([DFKD, *args], cwd=workdir, stdout=log, stderr=log)
    deadline = time.monotonic() + 180
    while not all((sweep / job / "checkpoint.pt").exists() for job in ("0", "1")):
        assert launcher.poll() is None and time.monotonic() < deadline, (
            tmp_path / "launcher.log").read_text()
        time.sleep(0.05)
    workers = _children(launcher.pid)
    assert workers
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=30)
    deadline = time.monotonic() + 120
    while any(_alive(w) for w in workers):  # they stop within an epoch, never train on
        assert time.monotonic() < deadline, "workers still running after the launcher died"
        time.sleep(0.1)
    for job in ("0", "1"):
        assert pd.read_csv(sweep / job / "metrics.csv").status.iloc[0] == "interrupted"
        assert (sweep / job / "checkpoint.pt").is_file()
    dfkd(*args, "resume=true", cwd=workdir)
    for job in ("0", "1"):
        assert pd.read_csv(sweep / job / "metrics.csv").status.iloc[0] == "ok"
