"""A run directory is dfkd's own: a crafted checkpoint never writes outside it, no link inside it
sends a write elsewhere, and a finished run is never replaced without overwrite=true
(docs/reliability.md, "Run directories")."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import QUICK_TEACHER, dfkd_here, one_line_error

from dfkd_cli.errors import UserError
from dfkd_cli.loop import resume
from dfkd_cli.utils.files import exclusive_lock, hold_run_lock, release_run_locks

TINY = ["epochs=2", "steps_per_epoch=2", "log_every=1", "teacher.hidden=[64]", "progress=false"]
ESCAPES = ("../../../../PWNED.sh", "../PWNED.sh", "/tmp/dfkd-test-PWNED.sh", "sub/../../PWNED.sh",
           ".", "..", "config.yaml/../../PWNED.sh")


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and not p.name.endswith(".log")
            and p.name != ".dfkd.lock"}


def crafted_checkpoint(path: Path) -> None:
    """What an attacker sharing the sweep directory leaves: a 'resumable' checkpoint whose run
    config names files outside the run directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {name: "echo owned\n" for name in ESCAPES} | {"config.yaml": "seed: 9\n"}
    torch.save({"run_config": {"config": "seed: 9\n", "hydra_files": files}}, path)


# ---------------------------------------------------------------------------------------------
# a crafted checkpoint writes nothing outside its run directory


def test_put_back_writes_only_the_run_config_names_inside_the_run_directory(tmp_path):
    run = tmp_path / "a" / "b" / "c" / "run"
    (run / ".hydra").mkdir(parents=True)
    stored = {"config": "seed: 9\n",
              "hydra_files": {name: "echo owned\n" for name in ESCAPES}
              | {"config.yaml": "seed: 9\n", "hydra.yaml": "h: 1\n", "evil.yaml": "x\n",
                 "overrides.yaml": ["not", "text"]}}
    resume.put_back(run, stored)
    assert not list(tmp_path.rglob("PWNED.sh")) and not Path("/tmp/dfkd-test-PWNED.sh").exists()
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml"]
    assert (run / ".hydra/config.yaml").read_text() == "seed: 9\n"
    # a .hydra that is a link to another folder is never written through
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / ".hydra/config.yaml").unlink()
    (run / ".hydra/hydra.yaml").unlink()
    (run / ".hydra").rmdir()
    (run / ".hydra").symlink_to(elsewhere)
    resume.put_back(run, stored)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("how", ["resume", "custom_subdir"])
def test_a_crafted_checkpoint_in_a_sweep_writes_nothing_outside(workdir, tmp_path, how):
    """The reproduction of the report: a checkpoint.pt whose run config names ../../x is left
    in a sweep's job directory; the job that meets it (a resume with another config, or a
    plain rerun where the jobs are not numbered folders) is refused and writes nowhere."""
    sweep = tmp_path / "deep" / "er" / "S"
    job = sweep / ("0" if how == "resume" else "job0")
    crafted_checkpoint(job / "checkpoint.pt")
    pd.DataFrame([{"status": "ok", "seed": 9, "student_rmse": 0.5}]).to_csv(
        job / "metrics.csv", index=False)
    before = files_under(job)
    extra = (["resume=true"] if how == "resume"
             else ["hydra.sweep.subdir=job${hydra.job.num}"])
    proc = dfkd_here("distill", "-m", *TINY, "seed=1", *extra, f"hydra.sweep.dir={sweep}",
                     cwd=workdir, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "job(s) not run" in proc.stderr
    assert not list(tmp_path.rglob("PWNED.sh")) and not Path("/tmp/dfkd-test-PWNED.sh").exists()
    after = files_under(job)
    # the job's own files are as they were (metrics.csv is not replaced by a `failed` row);
    # only .hydra/ may hold the checkpoint's own config, under the fixed names
    assert {k: v for k, v in after.items() if not k.startswith(".hydra")} == before
    assert {k for k in after if k.startswith(".hydra")} <= {
        ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"}


# ---------------------------------------------------------------------------------------------
# no link inside a run directory is followed


def test_the_run_lock_never_follows_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".dfkd.lock").symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        hold_run_lock(run)
    assert victim.read_text() == "precious\n"
    hard = tmp_path / "hard"
    hard.mkdir()
    os.link(victim, hard / ".dfkd.lock")  # a hard link to another file is refused too
    with pytest.raises(UserError, match="hard link"):
        hold_run_lock(hard)
    assert victim.read_text() == "precious\n"
    store_lock = tmp_path / "teacher.pt.lock"
    store_lock.symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        with exclusive_lock(store_lock):
            pass
    release_run_locks()
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("link", [".dfkd.lock", "distill.log", "metrics.csv", ".hydra",
                                  "seed1"])
def test_a_run_directory_holding_a_link_is_refused_before_anything_is_written(
        workdir, tmp_path, link):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file.txt").write_text("precious\n")
    target = victim if link in (".hydra", "seed1") else victim / "file.txt"
    run = tmp_path / "run"
    run.mkdir()
    (run / link).symlink_to(target)
    proc = dfkd_here("distill", *TINY, f"hydra.run.dir={run}", cwd=workdir, check=False)
    one_line_error(proc, "symbolic link", link)
    assert files_under(victim) == {"file.txt": b"precious\n"}
    assert sorted(p.name for p in run.iterdir()) == [link]
    # a sweep: refused before its first job, whichever job directory holds the link
    sweep = tmp_path / "sweep"
    (sweep / "1").mkdir(parents=True)
    (sweep / "1" / link).symlink_to(target)
    proc = dfkd_here("distill", "-m", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}",
                     cwd=workdir, check=False)
    one_line_error(proc, "symbolic link", link)
    assert files_under(victim) == {"file.txt": b"precious\n"}
    assert sorted(p.name for p in sweep.iterdir()) == ["1"]


# ---------------------------------------------------------------------------------------------
# a finished run is not replaced without overwrite=true


def test_a_finished_distill_run_is_not_replaced_by_a_plain_rerun(workdir, tmp_path):
    run = tmp_path / "run"
    dfkd_here("distill", *TINY, f"hydra.run.dir={run}", cwd=workdir)
    assert not (run / "checkpoint.pt").exists()  # the refusal cannot lean on it
    before = files_under(run)
    proc = dfkd_here("distill", *TINY, "batch_size=7", f"hydra.run.dir={run}", cwd=workdir,
                     check=False)
    one_line_error(proc, str(run), "finished run", "overwrite=true", "resume=true")
    assert files_under(run) == before  # metrics, student, history and .hydra/ as they were
    proc = dfkd_here("distill", *TINY, "resume=true", f"hydra.run.dir={run}", cwd=workdir)
    assert "finished already" in proc.stderr + proc.stdout
    dfkd_here("distill", *TINY, "batch_size=7", "overwrite=true", f"hydra.run.dir={run}",
              cwd=workdir)
    assert pd.read_csv(run / "metrics.csv").batch_size.iloc[0] == 7


def test_a_finished_population_member_is_enough_to_refuse(workdir, tmp_path):
    """A population writes into seed<N>/ folders: one finished member makes the run taken."""
    run = tmp_path / "run"
    (run / "seed1").mkdir(parents=True)
    pd.DataFrame([{"status": "ok", "seed": 1}]).to_csv(run / "seed1/metrics.csv", index=False)
    proc = dfkd_here("distill", *TINY, "seeds=[1]", f"hydra.run.dir={run}", cwd=workdir,
                     check=False)
    one_line_error(proc, "finished run", "seed1")
    # a failed job's row is no finished run: its directory may be used again
    pd.DataFrame([{"status": "failed", "seed": 1}]).to_csv(run / "seed1/metrics.csv",
                                                            index=False)
    proc = dfkd_here("distill", *TINY, "seeds=[1]", f"hydra.run.dir={run}", cwd=workdir,
                     check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_finished_sweep_is_refused_before_its_first_job(workdir, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["distill", "-m", *TINY, "seed=1", f"hydra.sweep.dir={sweep}"]
    dfkd_here(*args, cwd=workdir)
    before = files_under(sweep / "0")
    proc = dfkd_here(*args, cwd=workdir, check=False)
    one_line_error(proc, str(sweep), "finished or interrupted jobs (0)", "resume=true")
    assert files_under(sweep / "0") == before
    dfkd_here(*args, "resume=true", cwd=workdir)  # skips the finished job
    assert files_under(sweep / "0") == before


def test_a_finished_train_teacher_run_is_not_replaced(tmp_path):
    run = tmp_path / "run"
    store = f"teacher_store={tmp_path / 'store'}"
    dfkd_here("train-teacher", *QUICK_TEACHER, "progress=false", store,
              f"hydra.run.dir={run}", cwd=tmp_path)
    before = files_under(run)
    proc = dfkd_here("train-teacher", *QUICK_TEACHER, "progress=false", store,
                     f"hydra.run.dir={run}", cwd=tmp_path, check=False)
    one_line_error(proc, "finished run", "overwrite=true")
    assert files_under(run) == before
    proc = dfkd_here("train-teacher", *QUICK_TEACHER, "progress=false", store, "resume=true",
                     f"hydra.run.dir={run}", cwd=tmp_path)
    assert files_under(run) == before


def test_a_saved_config_is_never_resolved_and_has_no_anchors(workdir, tmp_path, monkeypatch):
    """resume=true compares the saved config as text: `${oc.env:...}` in a crafted one never
    reads the environment (the refusal would print it), and anchors are refused."""
    monkeypatch.setenv("DFKD_TEST_SECRET", "hunter2")
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"run_config": {"config": "seed: ${oc.env:DFKD_TEST_SECRET}\n"}},
               run / "checkpoint.pt")
    proc = dfkd_here("distill", *TINY, "resume=true", f"hydra.run.dir={run}", cwd=workdir,
                     env={"DFKD_TEST_SECRET": "hunter2"}, check=False)
    line = one_line_error(proc, "oc.env:DFKD_TEST_SECRET")
    assert "hunter2" not in proc.stderr + proc.stdout and "hunter2" not in line
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi"))
    torch.save({"run_config": {"config": bomb}}, run / "checkpoint.pt")
    proc = dfkd_here("distill", *TINY, "resume=true", f"hydra.run.dir={run}", cwd=workdir,
                     check=False)
    one_line_error(proc, "anchors or aliases")
