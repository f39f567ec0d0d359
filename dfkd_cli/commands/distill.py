"""`dfkd distill`: load the teachers, run the student loop, evaluate, write the tables.

A run is a population of K members (`seeds=[...]`; K = 1 for `seed=`): member k has its own
teacher, split, student, strategy state and random stream, and ends as a separate run with
seed k would (to float32 rounding; docs/testing.md), writing its own metrics.csv, history.csv
and student.pt.

A run survives interruption: every `checkpoint_every` epochs, and on SIGINT / SIGTERM, the loop's
whole state goes to `checkpoint.pt` in the run directory (atomically), the metrics row says
`status=interrupted`, and `resume=true` in the same run directory continues bit for bit.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from dfkd_cli.data import domains, images, priors, projection
from dfkd_cli.data.datasets import Split, Table, load_table, stacked
from dfkd_cli.errors import UserError
from dfkd_cli.loop import population, resume
from dfkd_cli.utils import run_dirs
from dfkd_cli.loop.selection import selections
from dfkd_cli.loop.stopping import reasons
from dfkd_cli.loop.student_loop import StudentLoop, build_student
from dfkd_cli.nets import architecture, checkpoints, metrics
from dfkd_cli.report.labels import alpha_label, arm_label
from dfkd_cli.strategies import build_strategy
from dfkd_cli.teachers import loader as teachers
from dfkd_cli.teachers.store import arch_label
from dfkd_cli.tracking import search
from dfkd_cli.tracking.trackers import Trackers
from dfkd_cli.utils import run_tables as tables
from dfkd_cli.utils import runtime
from dfkd_cli.utils.files import atomic_path
from dfkd_cli.utils.rng import Streams

log = logging.getLogger(__name__)

SUMMARY = ["dataset", "seed", "arm", "strategy", "alpha", "selection", "teacher_rmse",
           "student_rmse", "fidelity_rmse", "fidelity_rmse_prior", "student_r2", "wall_s", "device",
           "status"]
CHECKPOINT = run_dirs.CHECKPOINT
PRIOR_ROWS = 10_000  # prior draws for fidelity_rmse_prior
PRIOR_STREAM = 7_919_000  # offset of their random stream from the member's seed
# status=unstable when the student's fidelity RMSE on the prior draws ends more than this many
# times the untrained student's (docs/reliability.md says why 10)
UNSTABLE_RATIO = 10.0

UNTRAINED = ("no finite weights after training began: these are the untrained start's "
             "(selected_epoch -1)")
FIDELITY_ROWS = 1000  # the fixed synthetic set of selection=fidelity
FIDELITY_STREAM = 104_729_000  # its random stream's offset from the member's seed


@dataclass
class Ending:
    """How the student loop ended: each member's status, the wall time, whether a signal stopped
    it, and the untrained student's fidelity RMSE on the prior draws (K, k)."""

    statuses: list[str]
    wall: float
    interrupted: bool
    untrained: torch.Tensor


def save_state(loop: StudentLoop, path: Path, config: dict) -> None:
    """The loop's whole state and the run's config (resume.saved) in checkpoint.pt."""
    with atomic_path(path) as tmp:
        torch.save(loop.state_dict() | {"run_config": config}, tmp)


def resume_hint(run_dir: Path) -> str:
    """How to continue: the run alone, or the whole sweep when the run is a sweep's job (its
    finished jobs are skipped)."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return (f"continue the sweep with the same command (-m and its overrides) and "
                f"resume=true hydra.sweep.dir={HydraConfig.get().sweep.dir}")
    return f"continue with resume=true hydra.run.dir={run_dir}"


def stored_run(state_path: Path, dirs: list[Path]) -> tuple[dict | None, dict | None]:
    """(the loop state in checkpoint.pt or None, the config the run started with or None):
    from checkpoint.pt, else from a finished run's student.pt."""
    if state_path.is_file():
        state = checkpoints.load_weights_only(state_path)
        if not isinstance(state, dict):
            raise UserError(f"{state_path} is not a dfkd resumable checkpoint")
        return state, state.get("run_config")
    student = dirs[0] / "student.pt"
    if run_dirs.finished(dirs) and student.is_file():
        saved = checkpoints.load_checkpoint(student)
        return None, saved.get("run_config") or {"config": saved.get("config")}
    return None, None


def refuse_rerun(cfg, run_dir: Path, dirs: list[Path], state_path: Path) -> None:
    """A run directory holding a finished run, or an interrupted one's resumable checkpoint.pt,
    is continued with resume=true or started over with overwrite=true; a plain rerun there is
    refused (loop/run_dir.py), with the .hydra/ files Hydra wrote put back as they were."""
    try:
        run_dirs.refuse_taken(dirs, run_dir, cfg.resume, cfg.overwrite)
    except run_dirs.RunDirTaken:
        try:
            stored = stored_run(state_path, dirs)[1]
        except Exception:  # noqa: BLE001 - unreadable: the run-start callback's copy, if any
            stored = None
        resume.put_back(run_dir, stored)
        raise


def run(cfg, run_dir: Path) -> pd.DataFrame | None:
    """`dfkd distill`: see the module docstring."""
    run_dir = Path(run_dir)
    device = runtime.resolve_device(cfg.device)
    members = population.members(cfg, run_dir)
    seeds, dirs = members.seeds, members.dirs
    state_path = run_dir / CHECKPOINT
    refuse_rerun(cfg, run_dir, dirs, state_path)
    state, stored = stored_run(state_path, dirs) if cfg.resume else (None, None)
    resume.check(cfg, run_dir, stored)
    if cfg.resume and run_dirs.finished(dirs):
        resume.put_back(run_dir, stored)  # left as it is: .hydra/ too
        log.info("resume=true: %s has finished already; nothing to do", run_dir)
        return pd.concat(pd.read_csv(d / tables.METRICS) for d in dirs)
    table = load_table(cfg.dataset, cfg.data_dir)
    teacher = teachers.load(cfg, seeds, table, device)
    search.check_outputs(cfg, column_names(teacher, table)[1])
    features = teachers.feature_names(teacher.features, teacher.input_dim)
    domains.write(dirs, teacher.domains, features)
    splits = None if table is None else teachers.member_splits(cfg, teacher, table, seeds, device)
    runtime.seed_everything(seeds[0])
    rng = Streams(seeds, device)
    arch, student = build_student(cfg, teacher, rng)
    loop = build_loop(cfg, teacher, splits, student, rng, seeds)
    untrained = prior_fidelity(teacher, student, seeds)  # (K, k), before any step (or resume)
    if state is not None:
        try:
            loop.load_state_dict(state)
        except Exception as exc:  # a missing key, a wrong shape or type: not this run's state
            why = " ".join(str(exc).split())[:200]
            raise UserError(f"{state_path} does not fit this run ({type(exc).__name__}: {why}); "
                            "delete it to start over, or start a new run directory") from exc
        log.info("resumed %s at epoch %d of %d", run_dir, loop.epoch, cfg.epochs)
    config = resume.saved(cfg)
    with Trackers(cfg, seeds, dirs) as trackers:
        started = time.perf_counter()
        with runtime.Interrupts() as interrupted:
            loop.run(should_stop=interrupted,
                     checkpoint=lambda: save_state(loop, state_path, config),
                     on_log=lambda: trackers.history(loop.history))
        wall = time.perf_counter() - started
        if interrupted():
            save_state(loop, state_path, config)
            log.warning("interrupted at epoch %d; %s", loop.epoch, resume_hint(run_dir))
        statuses = ["interrupted"] * len(seeds) if interrupted() else loop.status()
        frame = write_members(cfg, loop, arch, table, splits, teacher, members,
                              Ending(statuses, wall, interrupted(), untrained), device)
        trackers.finish(frame)
    print(tables.show(frame, SUMMARY))
    if interrupted():
        sys.exit(interrupted.exit_code)
    if state_path.is_file():
        state_path.unlink()  # finished: the resumable state is no longer needed
    return frame


def build_loop(cfg, teacher: teachers.Teacher, splits: list[Split] | None, student,
               rng: Streams, seeds: list[int]) -> StudentLoop:
    """The student loop: the strategy drawing from the run's prior, the validation rows, the
    fixed set of selection=fidelity (and of stop=plateau, whatever the selection: it draws
    from streams of its own, so the training is the same) and the projection onto the
    teacher's domain (domain=on)."""
    device = rng.device
    project = (projection.Projection(teacher.domains, *teacher.input_scales(device))
               if cfg.domain == "on" else None)
    remedy = (", or retrain it with dfkd train-teacher overwrite=true (a teacher from an older "
              "dfkd)" if cfg.teacher.format in ("dfkd", "sklearn") else
              ", or add them to its spec: dfkd spec --data <its training rows> writes them")
    prior = teacher.prior(cfg.prior, rng, remedy)
    view = teacher.images(cfg.dataset.input_shape, device)
    strategy = build_strategy(cfg.strategy, teacher, rng, splits and stacked(splits, "train"),
                              prior, project, view)
    augment = random_shift(cfg.shift, view, teacher, rng)
    fidelity = None
    if "fidelity" in selections(cfg.selection) or cfg.get("stop", "off") == "plateau":
        streams = Streams([s + FIDELITY_STREAM for s in seeds], device)
        fidelity = fidelity_set(teacher, prior.drawing_from(streams), project)
    return StudentLoop(cfg, teacher, student, strategy, splits and stacked(splits, "val"),
                       fidelity, project, augment)


def random_shift(pixels: int, view: images.ImageView | None, teacher: teachers.Teacher,
                 rng: Streams) -> images.RandomShift | None:
    """shift=<pixels>'s augmentation of x_g (None at 0), or a UserError where the rows are not
    images or the teacher records no per-pixel range."""
    if not pixels:
        return None
    if view is None:
        raise UserError(f"shift={pixels} moves synthetic images, and this run's rows are not "
                        "image-shaped: give dataset.input_shape=[channels, height, width]")
    if teacher.box is None:
        raise UserError(f"shift={pixels} clamps the moved images to each pixel's training range, "
                        f"and teacher {teacher.sources[0]} records none (a dfkd teacher does)")
    return images.RandomShift(view, pixels, rng, teacher.box)


@torch.no_grad()
def fidelity_set(teacher: teachers.Teacher, prior: priors.Prior, project
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """selection=fidelity's fixed set, drawn once per member from the run's prior (projected
    onto the domain when domain=on) from a stream of its own, with the teacher's labels."""
    x = prior(FIDELITY_ROWS)
    x = project(x) if project is not None else x
    return x, teacher.module(x)


def column_names(teacher: teachers.Teacher, table: Table | None) -> tuple[list[str], list[str]]:
    """Feature and target names: the dataset's, else the teacher's, else x1.. / y, y1.."""
    if table is not None:
        return table.features, table.targets
    k = teacher.output_dim
    return (teacher.features or [f"x{i + 1}" for i in range(teacher.input_dim)],
            teacher.targets or (["y"] if k == 1 else [f"y{i + 1}" for i in range(k)]))


@torch.no_grad()
def prior_fidelity(teacher: teachers.Teacher, student, seeds: list[int],
                   rows: int = PRIOR_ROWS) -> torch.Tensor:
    """Per member and output, the RMSE between S and T on fresh N(0, I) draws (K, k): the
    data-free measure of how well the student copies the teacher where it was trained."""
    x = Streams([s + PRIOR_STREAM for s in seeds], student.params[0].device).randn(
        rows, teacher.input_dim)
    return metrics.rmse(metrics.predict(student, x), metrics.predict(teacher.module, x))


def test_scores(splits: list[Split] | None, teacher: teachers.Teacher,
                student, targets: list[str]) -> list[dict[str, float]]:
    """Per member, teacher / student / fidelity scores on the real test rows, and the RMSEs on
    the validation rows (`val_rmse` the student's, `teacher_val_rmse`: what a user with labelled
    rows could choose a recipe by, never the test rows); none without a dataset."""
    if splits is None:
        return [{} for _ in teacher.scalers]
    x_test, y_test = stacked(splits, "test")
    x_val, y_val = stacked(splits, "val")
    t_pred = metrics.predict(teacher.module, x_test)
    s_pred = metrics.predict(student, x_test)
    val = {name: metrics.rmse(metrics.predict(model, x_val), y_val)
           for name, model in (("teacher", teacher.module), ("student", student))}
    return [metrics.scores("teacher", t_pred[k], y_test[k], targets)
            | metrics.scores("student", s_pred[k], y_test[k], targets, part.scaler.y_std)
            | metrics.columns("fidelity_rmse", metrics.rmse(s_pred[k], t_pred[k]), targets)
            | metrics.columns("teacher_val_rmse", val["teacher"][k], targets)
            | metrics.columns("val_rmse", val["student"][k], targets)
            for k, part in enumerate(splits)]


def write_members(cfg, loop: StudentLoop, arch: dict, table: Table | None,
                  splits: list[Split] | None, teacher: teachers.Teacher,
                  members: population.Members, ending: Ending, device: torch.device
                  ) -> pd.DataFrame:
    """Evaluate every member (on its real test rows when there is a dataset, and on prior
    draws) for each selection; write its students, history and metrics rows. The first
    selection's student is student.pt, a second one's student_<selection>.pt. An interrupted
    run reports its current weights. `prior_ratio` is the student's fidelity RMSE on the prior
    draws over the untrained student's: above UNSTABLE_RATIO a run that ended ok says
    status=unstable (its loss ended far above where it started)."""
    seeds, dirs = members.seeds, members.dirs
    statuses, interrupted = ending.statuses, ending.interrupted
    features, targets = column_names(teacher, table)
    diverged = loop.diverged_epoch.tolist()
    ran = torch.where(loop.plateau.stopped, loop.plateau.epoch + 1, loop.epoch).tolist()
    stops = reasons(loop.plateau.epoch.tolist(), diverged, loop.epoch - 1, interrupted,
                    loop.plateau.on)
    rows: list[list[dict]] = [[] for _ in seeds]
    run_config = resume.saved(cfg)  # what a later resume=true compares and puts back
    for n, selection in enumerate(selections(cfg.selection)):
        selected = [loop.epoch - 1] * len(seeds) if interrupted else loop.finish(selection)
        scores = test_scores(splits, teacher, loop.student, targets)
        prior = prior_fidelity(teacher, loop.student, seeds)
        ratio = (prior.pow(2).mean(dim=1) / ending.untrained.pow(2).mean(dim=1)).sqrt().tolist()
        for k, (seed, scaler, member_dir) in enumerate(zip(seeds, teacher.scalers, dirs)):
            status = ("unstable" if statuses[k] == "ok" and not ratio[k] <= UNSTABLE_RATIO
                      else statuses[k])
            row = {"command": "distill", "dataset": cfg.dataset.name, "seed": seed,
                   "arm": arm_label(cfg), "strategy": cfg.strategy.name,
                   "alpha": alpha_label(cfg.alpha), "selection": selection,
                   "prior": cfg.prior, "domain": cfg.domain,
                   "teacher_hidden": (architecture.arch_name(teacher.arch) if teacher.arch
                                      else arch_label(cfg.teacher)),
                   "student_hidden": architecture.arch_name(arch),
                   "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
                   "batch_size": cfg.batch_size, "epochs_run": ran[k], **stops[k],
                   "selected_epoch": selected[k], **scores[k],
                   **metrics.columns("fidelity_rmse_prior", prior[k], targets),
                   "wall_s": ending.wall, "members": len(seeds), "device": str(device),
                   "prior_ratio": ratio[k], "status": status,
                   "note": (UNTRAINED if selected[k] < 0 and not interrupted else None),
                   "diverged_epoch": diverged[k] if diverged[k] >= 0 else None,
                   "nonfinite_skips": int(loop.skips[k]),
                   "teacher_path": teacher.sources[k]}
            checkpoints.save_checkpoint(
                member_dir / ("student.pt" if n == 0 else f"student_{selection}.pt"),
                loop.student.member_state_dict(k),
                arch=arch,
                scaler=scaler.payload(), features=list(features), targets=list(targets),
                dataset=cfg.dataset.name, seed=seed, metrics=row,
                config=OmegaConf.to_yaml(cfg), run_config=run_config)
            rows[k].append(row)
    for member_dir, history in zip(dirs, loop.history):
        tables.write_history(member_dir, history)
    return pd.concat([tables.write_metrics(d, r) for d, r in zip(dirs, rows)],
                     ignore_index=True)
