"""What an adversarial try of dfkd broke (issue 16), one test or more per item, so it stays fixed:
bad input is one line and exit 2, crafted files never run code, a resume or a teacher that does
not fit the run is refused, and a sweep's report keeps apart what the sweep varied."""

from __future__ import annotations

import gzip
import json
import os
import shlex
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from dfkd_cli.commands import report
from dfkd_cli.errors import UserError
from dfkd_cli.nets.checkpoints import load_checkpoint
from dfkd_cli.report.write import write_report

from conftest import QUICK_DISTILL, QUICK_TEACHER, dfkd_here

TINY = ["epochs=2", "steps_per_epoch=2", "log_every=1", "teacher.hidden=[64]", "progress=false"]
STORE_TEACHER = Path("outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt")


def one_line_error(proc, *needles: str) -> None:
    """Exit 2 and a single `error:` line on stderr holding every needle, no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


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
    from dfkd_cli.config import validate

    from conftest import make_config

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
    for change, key in (("seed=2", "seed: 1 -> 2"), ("batch_size=7", "batch_size: 50 -> 7"),
                        ("student=mlp25", "student.hidden"), ("optimizer=adam", "optimizer.name"),
                        ("selection=val", "selection"), ("seeds=[1,2]", "seeds")):
        proc = dfkd_here("distill", *RESUMABLE, change, "resume=true", f"hydra.run.dir={run}",
                         cwd=workdir, check=False)
        one_line_error(proc, key, "progress")
        assert (run / ".hydra/config.yaml").read_text() == config, change
        assert (run / ".hydra/overrides.yaml").read_text() == overrides, change
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
