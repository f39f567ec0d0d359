"""Long work talks: every command that trains logs a progress line every `progress_every`
seconds wherever its output goes (a file under nohup, SLURM or CI), not only a bar on a
terminal; and the sweep's summary names the jobs that ran long."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DFKD, QUICK_DISTILL, QUICK_TEACHER, dfkd_here
from dfkd_cli.utils.progress import Progress, duration

LINE = re.compile(r"\[(?P<time>[\d-]+ [\d:,]+)\]\[dfkd\]\[INFO\] - (?P<what>\w+): epoch "
                  r"(?P<epoch>\d+)/(?P<cap>\d+), (?P<figures>.*), elapsed \S+, ETA .+")


def progress_lines(log: Path) -> list[re.Match]:
    return [m for m in map(LINE.match, log.read_text().splitlines()) if m]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval(caplog):
    """One line each time `every` seconds have passed, with the figures of that moment and an
    ETA from the rate so far; none with every=0."""
    clock = Clock()
    quiet = Progress("x", 100, 0, bar=False, clock=clock)
    talking = Progress("bounded", 100, 30, bar=False, clock=clock)
    calls = []
    with caplog.at_level("INFO", logger="dfkd"):
        for epoch in range(1, 101):
            clock.now = epoch  # one second an epoch
            quiet.update(epoch)
            talking.update(epoch, lambda: calls.append(epoch) or f"figure {epoch}")
    lines = [r.getMessage() for r in caplog.records]
    assert calls == [30, 60, 90]  # the figures are computed for a line only
    assert lines == [f"bounded: epoch {e}/100, figure {e}, elapsed {duration(e)}, ETA "
                     f"{duration(100 - e)}" for e in (30, 60, 90)]


def test_the_eta_of_a_run_that_may_stop_early_is_an_upper_bound():
    clock = Clock()
    progress = Progress("teacher", 500, 10, bar=False, start=100, early_stop=True, clock=clock)
    clock.now = 20
    assert progress.line(140, "", clock.now) == \
        "teacher: epoch 140/500, elapsed 20s, ETA at most 3m00s"
    assert [duration(s) for s in (0, 59.6, 61, 7500)] == ["0s", "1m00s", "1m01s", "2h05m"]


def test_distill_and_train_teacher_log_progress_to_their_log_files(tmp_path):
    """In process, stderr is not a terminal (as under nohup): the run directories' logs hold
    the lines, with the members training and the fidelity (distill) or validation (teacher)
    figure, epochs increasing."""
    dfkd_here("train-teacher", *QUICK_TEACHER, "epochs=40", "progress_every=0.0001",
              "hydra.run.dir=teacher", cwd=tmp_path)
    dfkd_here("distill", *QUICK_DISTILL, "epochs=30", "progress_every=0.0001",
              "hydra.run.dir=student", cwd=tmp_path)
    dfkd_here("distill", *QUICK_DISTILL, "progress_every=0", "hydra.run.dir=silent",
              cwd=tmp_path)
    teacher = progress_lines(tmp_path / "teacher" / "train-teacher.log")
    student = progress_lines(tmp_path / "student" / "distill.log")
    assert len(teacher) >= 10 and len(student) >= 10
    assert {m["what"] for m in teacher} == {"teacher"} and {m["what"] for m in student} == \
        {"bounded"}
    assert re.fullmatch(r"1/1 members training, val MSE [\d.e-]+", teacher[0]["figures"])
    assert re.fullmatch(r"1/1 members training, fidelity RMSE [\d.e-]+", student[0]["figures"])
    for lines, cap in ((teacher, "40"), (student, "30")):
        epochs = [int(m["epoch"]) for m in lines]
        assert epochs == sorted(set(epochs)) and {m["cap"] for m in lines} == {cap}
    assert progress_lines(tmp_path / "silent" / "distill.log") == []
    # the logs name the run's own files relative to the run directory
    for log in (tmp_path / "teacher" / "train-teacher.log", tmp_path / "student" / "distill.log"):
        assert str(tmp_path) not in log.read_text()
        assert "the whole input domain: input_domain.yaml" in log.read_text()


def test_a_population_counts_its_members_and_a_run_without_scores_shows_its_loss(tmp_path):
    dfkd_here("train-teacher", *QUICK_TEACHER, "seeds=[1,2]", "hydra.run.dir=teachers",
              cwd=tmp_path)
    dfkd_here("distill", *QUICK_DISTILL, "seeds=[1,2]", "selection=last", "epochs=20",
              "progress_every=0.0001", "hydra.run.dir=pop", cwd=tmp_path)
    lines = progress_lines(tmp_path / "pop" / "distill.log")
    assert lines and all(re.fullmatch(r"\d/2 members training, loss [\d.e-]+", m["figures"])
                         for m in lines)


def test_the_log_talks_while_the_run_goes_on(tmp_path, workdir):
    """A real process with its output in a file (nohup's situation): progress lines reach the
    run's log while it trains, each within the interval of the one before."""
    run_dir = tmp_path / "run"
    with open(tmp_path / "nohup.out", "w") as out:
        proc = subprocess.Popen(
            [DFKD, "distill", "epochs=1000000", "steps_per_epoch=1", "teacher.hidden=[64]",
             "progress_every=0.5", f"teacher_store={workdir / 'outputs/teachers'}",
             f"hydra.run.dir={run_dir}"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                log = run_dir / "distill.log"
                if log.is_file() and len(progress_lines(log)) >= 4:
                    break
                assert proc.poll() is None, (tmp_path / "nohup.out").read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    lines = progress_lines(run_dir / "distill.log")
    assert len(lines) >= 4, (tmp_path / "nohup.out").read_text()
    stamps = [time.mktime(time.strptime(m["time"].split(",")[0], "%Y-%m-%d %H:%M:%S"))
              + int(m["time"].split(",")[1]) / 1000 for m in lines]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(0.45 <= gap < 3 for gap in gaps), gaps  # 0.5 s apart, one epoch late at most


@pytest.mark.parametrize("value", ["-1"])
def test_a_negative_interval_is_refused(tmp_path, value):
    proc = dfkd_here("distill", f"progress_every={value}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "progress_every=-1.0 is not valid" in proc.stderr
