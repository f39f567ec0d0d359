"""Faults a sweep meets: interruption, divergence, killed writes, crafted files, concurrent jobs.
docs/reliability.md lists each fault with the test here that backs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import DFKD, QUICK_DISTILL, QUICK_TEACHER, dfkd_here

from dfkd_cli.errors import UserError
from dfkd_cli.nets.checkpoints import FORMAT, VERSION, load_checkpoint, load_weights_only

LONG = ["strategy=bounded", "selection=val", "epochs=300", "steps_per_epoch=2", "log_every=5",
        "checkpoint_every=5", "teacher.hidden=[64]", "progress=false"]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def assert_same_run(full: Path, resumed: Path) -> None:
    """The resumed run's student and history are the uninterrupted run's, bit for bit."""
    a, b = (load_checkpoint(d / "student.pt") for d in (full, resumed))
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "history.csv"),
                                  pd.read_csv(full / "history.csv"))


@pytest.fixture(scope="module")
def long_run(workdir, tmp_path_factory) -> Path:
    """The LONG run uninterrupted (in this process), the reference of every interrupted one."""
    full = tmp_path_factory.mktemp("long") / "full"
    dfkd_here("distill", *LONG, f"hydra.run.dir={full}", cwd=workdir)
    return full


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_and_resume_is_bit_for_bit(workdir, long_run, tmp_path, sig):
    """A real signal to a real process; the resume in this process."""
    cut = tmp_path / "cut"
    proc = subprocess.Popen([DFKD, "distill", *LONG, f"hydra.run.dir={cut}"], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(cut / "checkpoint.pt", proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig
    interrupted = pd.read_csv(cut / "metrics.csv").iloc[0]
    assert interrupted.status == "interrupted" and 0 < interrupted.epochs_run < 300
    assert (cut / "checkpoint.pt").is_file()

    dfkd_here("distill", *LONG, f"hydra.run.dir={cut}", "resume=true", cwd=workdir)
    assert_same_run(long_run, cut)
    assert pd.read_csv(cut / "metrics.csv").status.iloc[0] == "ok"
    assert not (cut / "checkpoint.pt").exists()
    # a finished run resumed again does nothing
    again = dfkd_here("distill", *LONG, f"hydra.run.dir={cut}", "resume=true", cwd=workdir)
    assert "finished already" in again.stderr + again.stdout


def test_sigkill_resumes_from_the_last_periodic_checkpoint(workdir, tmp_path):
    """SIGKILL leaves no chance to save: resume=true continues from the last periodic
    checkpoint (every 7 epochs, never on a log row of every 50, so the partial loss sums
    are in it) and ends bit for bit as the run that was never stopped."""
    args = [*(o for o in LONG if not o.startswith(("log_every", "checkpoint_every"))),
            "log_every=50", "checkpoint_every=7"]
    dfkd_here("distill", *args, f"hydra.run.dir={tmp_path}/full", cwd=workdir)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([DFKD, "distill", *args, f"hydra.run.dir={cut}"], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(cut / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert not (cut / "metrics.csv").exists()  # nothing was written at the kill
    state = load_weights_only(cut / "checkpoint.pt")
    assert state["epoch"] % 7 == 0 and state["steps_logged"] > 0

    dfkd_here("distill", *args, f"hydra.run.dir={cut}", "resume=true", cwd=workdir)
    assert_same_run(tmp_path / "full", cut)


def test_divergence_ends_the_run_with_status_and_finite_weights(workdir, tmp_path):
    dfkd_here("distill", "optimizer=sgd", "optimizer.lr=1e15", *QUICK_DISTILL,
              f"hydra.run.dir={tmp_path}", cwd=workdir)
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert row.status == "diverged" and row.diverged_epoch >= 0
    assert row.epochs_run <= row.diverged_epoch + 1  # it stopped there
    student = load_checkpoint(tmp_path / "student.pt")  # checks the weights are finite
    assert student["metrics"]["status"] == "diverged"


def test_nonfinite_skip_rolls_back_and_carries_on(workdir, tmp_path):
    dfkd_here("distill", "optimizer=sgd", "optimizer.lr=1e15", "on_nonfinite=skip", *QUICK_DISTILL,
              f"hydra.run.dir={tmp_path}", cwd=workdir)
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.nonfinite_skips >= 1 and row.epochs_run == 6
    load_checkpoint(tmp_path / "student.pt")


WRITER = textwrap.dedent("""
    import sys, torch
    from dfkd_cli.nets.checkpoints import save_checkpoint
    weights = torch.zeros(2_000_000)
    i = 0
    while True:
        i += 1
        weights.fill_(i)
        save_checkpoint(sys.argv[1], {"w": weights}, arch={"version_written": i})
""")


def test_sigkill_during_writes_leaves_a_readable_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        while not path.exists():
            time.sleep(0.01)
        time.sleep(0.2 + 0.15 * trial)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        payload = load_weights_only(path)  # whole and readable (not a model: no structure check)
        written = payload["arch"]["version_written"]
        assert torch.equal(payload["state_dict"]["w"], torch.full((2_000_000,), float(written)))


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_is_refused_without_running_it(workdir, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "teacher.pt"
    torch.save({"format": FORMAT, "version": VERSION, "payload": Exploit(marker)}, evil)
    with pytest.raises(UserError, match="does not load with weights only"):
        load_checkpoint(evil)
    proc = dfkd_here("distill", f"teacher.path={evil}", *QUICK_DISTILL, cwd=workdir, check=False)
    assert proc.returncode == 2 and "does not load with weights only" in proc.stderr
    assert not marker.exists()
    with open(evil, "rb") as f:  # the file really is an exploit
        assert b"system" in f.read()


def test_nonfinite_teacher_weights_are_refused(workdir, tmp_path):
    good = workdir / "outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt"
    payload = load_checkpoint(good)
    payload["state_dict"]["0.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(payload, bad)
    proc = dfkd_here("distill", f"teacher.path={bad}", *QUICK_DISTILL, cwd=workdir, check=False)
    assert proc.returncode == 2 and "non-finite weights in ['0.weight']" in proc.stderr


def test_concurrent_jobs_train_a_missing_teacher_once(tmp_path):
    procs = [subprocess.Popen([DFKD, "train-teacher", "seed=9", *QUICK_TEACHER,
                               f"hydra.run.dir={tmp_path}/job{i}"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.communicate()
    statuses = sorted(pd.read_csv(tmp_path / f"job{i}/metrics.csv").status.iloc[0]
                      for i in range(2))
    assert statuses == ["exists", "ok"]
    load_checkpoint(tmp_path / "outputs/teachers/friedman/mlp64-tanh/seed9/teacher.pt")


def test_one_failing_job_does_not_stop_the_sweep(workdir, tmp_path):
    proc = dfkd_here("distill", "-m", "epochs=4,0",
                     *[o for o in QUICK_DISTILL if not o.startswith("epochs")],
                     f"hydra.sweep.dir={tmp_path}", cwd=workdir, check=False)
    assert proc.returncode == 1 and "1 of 2 jobs failed" in proc.stderr  # after the summary
    assert (tmp_path / "report.md").is_file()
    rows = pd.concat(pd.read_csv(p) for p in sorted(tmp_path.glob("*/metrics.csv")))
    assert sorted(rows.status) == ["failed", "ok"]
    assert "epochs=0 is not valid" in rows[rows.status == "failed"].error.iloc[0]


def test_rows_with_missing_values_can_be_dropped(workdir, tmp_path):
    csv = tmp_path / "gaps.csv"
    lines = [f"{i % 7},{i % 5},{(i * 3) % 11}" for i in range(300)]
    lines[10] = "1,,3"
    csv.write_text("a,b,y\n" + "\n".join(lines) + "\n")
    refused = dfkd_here("train-teacher", "dataset=csv", f"dataset.path={csv}", *QUICK_TEACHER,
                        cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "missing or infinite values in 1 rows" in refused.stderr
    dropped = dfkd_here("train-teacher", "dataset=csv", f"dataset.path={csv}",
                        "dataset.nonfinite=drop", *QUICK_TEACHER, cwd=tmp_path)
    assert "dropped 1 of 300 rows" in dropped.stderr + dropped.stdout
