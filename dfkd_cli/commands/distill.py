"""`dfkd distill`: load the teachers, run the student loop, evaluate, write the tables.

A run is a population of K members (`seeds=[...]`; K = 1 for `seed=`): member k has its own
teacher, split, student, strategy state and random stream, and ends as a separate run with
seed k would (to float32 rounding; docs/testing.md), writing its own metrics.csv, history.csv
and student.pt.

A run survives interruption: every `checkpoint_every` epochs, and on SIGINT / SIGTERM, the loop's
whole state goes to `checkpoint.pt` in the run directory (atomically), the metrics row says
`status=interrupted`, and `resume=true` in the same run directory continues bit for bit.

This module and commands/records.py are the only readers of the run's config: the layers below
take records, values or one group of it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from dfkd_cli.commands import records
from dfkd_cli.data import domains, images, priors, projection
from dfkd_cli.data.datasets import Split, Table, load_table, stacked
from dfkd_cli.errors import UserError
from dfkd_cli.loop import evaluation, population, resume
from dfkd_cli.loop.metrics_row import SUMMARY, distill_row
from dfkd_cli.loop.student_loop import StudentLoop, build_student
from dfkd_cli.nets import architecture, checkpoints, metrics
from dfkd_cli.strategies.registry import build_strategy
from dfkd_cli.teachers import loader
from dfkd_cli.teachers.store import arch_label
from dfkd_cli.tracking import objectives
from dfkd_cli.tracking.trackers import Trackers
from dfkd_cli.utils import run_dirs, runtime
from dfkd_cli.utils import run_tables as tables
from dfkd_cli.utils.files import atomic_path
from dfkd_cli.utils.rng import Streams

log = logging.getLogger(__name__)

CHECKPOINT = run_dirs.CHECKPOINT
FIDELITY_ROWS = 1000  # the fixed synthetic set of selection=fidelity
FIDELITY_STREAM = 104_729_000  # its random stream's offset from the member's seed


@dataclass
class Ending:
    """How the student loop ended: each member's status, the wall time, whether a signal stopped
    it, and the untrained student's gaussian fidelity RMSE (K, k)."""

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
    refused (utils/run_dirs.py), with the .hydra/ files Hydra wrote put back as they were."""
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
    members = records.members(cfg, run_dir)
    seeds, dirs = members.seeds, members.dirs
    state_path = run_dir / CHECKPOINT
    refuse_rerun(cfg, run_dir, dirs, state_path)
    state, stored = stored_run(state_path, dirs) if cfg.resume else (None, None)
    resume.check(records.config_text(cfg), run_dir, stored)
    if cfg.resume and run_dirs.finished(dirs):
        resume.put_back(run_dir, stored)  # left as it is: .hydra/ too
        log.info("resume=true: %s has finished already; nothing to do", run_dir)
        return pd.concat(pd.read_csv(d / tables.METRICS) for d in dirs)
    table = load_table(cfg.dataset, cfg.data_dir)
    source = records.teacher_source(cfg)
    teacher = loader.load(source, seeds, table, device)
    objectives.check_outputs(cfg.objective, column_names(teacher, table)[1])
    features = loader.feature_names(teacher.features, teacher.input_dim)
    domains.write(dirs, teacher.domains, features)
    splits = None if table is None else loader.member_splits(source, teacher, table, seeds,
                                                             device)
    runtime.seed_everything(seeds[0])
    rng = Streams(seeds, device)
    arch, student = build_student(cfg.student, cfg.dataset.input_shape, cfg.fast_path, teacher,
                                  rng)
    loop = build_loop(cfg, teacher, splits, student, rng, seeds)
    untrained = evaluation.gaussian_fidelity(teacher, student, seeds)  # before any step
    if state is not None:
        try:
            loop.load_state_dict(state)
        except Exception as exc:  # a missing key, a wrong shape or type: not this run's state
            why = " ".join(str(exc).split())[:200]
            raise UserError(f"{state_path} does not fit this run ({type(exc).__name__}: {why}); "
                            "delete it to start over, or start a new run directory") from exc
        log.info("resumed %s at epoch %d of %d", run_dir, loop.epoch, cfg.epochs)
    config = resume.saved(records.config_text(cfg))
    with Trackers(cfg.logger, records.plain(cfg), seeds, dirs) as trackers:
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
        ending = Ending(statuses, wall, interrupted(), untrained)
        frame = write_members(loop, member_row(cfg, teacher, arch), table, splits, teacher,
                              members, ending, device, config)
        trackers.finish(frame)
    print(tables.show(frame, SUMMARY))
    if interrupted():
        sys.exit(interrupted.exit_code)
    if state_path.is_file():
        state_path.unlink()  # finished: the resumable state is no longer needed
    return frame


def build_loop(cfg, teacher: loader.Teacher, splits: list[Split] | None, student,
               rng: Streams, seeds: list[int]) -> StudentLoop:
    """The student loop: the strategy drawing from the run's prior, the validation rows, the
    fixed set of selection=fidelity (and of stop=plateau, whatever the selection: it draws
    from streams of its own, so the training is the same) and the projection onto the
    teacher's domain (domain=on)."""
    device = rng.device
    settings = records.loop_settings(cfg)
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
    if "fidelity" in settings.selections or settings.stop.on:
        streams = Streams([s + FIDELITY_STREAM for s in seeds], device)
        fidelity = fidelity_set(teacher, prior.drawing_from(streams), project)
    return StudentLoop(settings, teacher, student, strategy,
                       splits and stacked(splits, "val"), fidelity, project, augment)


def random_shift(pixels: int, view: images.ImageView | None, teacher: loader.Teacher,
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
def fidelity_set(teacher: loader.Teacher, prior: priors.Prior, project
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """selection=fidelity's fixed set, drawn once per member from the run's prior (projected
    onto the domain when domain=on) from a stream of its own, with the teacher's labels."""
    x = prior(FIDELITY_ROWS)
    x = project(x) if project is not None else x
    return x, teacher.module(x)


def column_names(teacher: loader.Teacher, table: Table | None) -> tuple[list[str], list[str]]:
    """Feature and target names: the dataset's, else the teacher's, else x1.. / y, y1.."""
    if table is not None:
        return table.features, table.targets
    k = teacher.output_dim
    return (teacher.features or [f"x{i + 1}" for i in range(teacher.input_dim)],
            teacher.targets or (["y"] if k == 1 else [f"y{i + 1}" for i in range(k)]))


def member_row(cfg, teacher: loader.Teacher, arch: dict[str, Any]) -> dict[str, Any]:
    """What the run is, the same in every member's row: metrics_row.distill_row's `run`
    (the member's seed is set per member)."""
    return {"command": "distill", "dataset": cfg.dataset.name, **records.labels(cfg),
            "prior": cfg.prior, "domain": cfg.domain,
            "teacher_hidden": (architecture.arch_name(teacher.arch) if teacher.arch
                               else arch_label(cfg.teacher)),
            "student_hidden": architecture.arch_name(arch),
            "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
            "batch_size": cfg.batch_size, "selections": records.loop_settings(cfg).selections,
            "arch": arch, "config": records.config_text(cfg)}


def write_members(loop: StudentLoop, run: dict[str, Any], table: Table | None,
                  splits: list[Split] | None, teacher: loader.Teacher,
                  members: population.Members, ending: Ending, device: torch.device,
                  run_config: dict[str, Any]) -> pd.DataFrame:
    """Evaluate every member for each selection (the first selection's student is student.pt,
    a second one's student_<selection>.pt; an interrupted run reports its current weights) and
    write its students, history and metrics rows."""
    features, targets = column_names(teacher, table)
    outcomes = loop.outcome(ending.interrupted)
    rows: list[list[dict]] = [[] for _ in members.seeds]
    for n, selection in enumerate(run["selections"]):
        if ending.interrupted:
            selected = [loop.epoch - 1] * len(members.seeds)
        else:
            selected = loop.selected_epochs(selection)
            loop.use(selection)
        scores = evaluation.test_scores(splits, teacher, loop.student, targets)
        gaussian = evaluation.gaussian_fidelity(teacher, loop.student, members.seeds)
        ratio = evaluation.ratio_to_untrained(gaussian, ending.untrained)
        for k, (seed, member_dir) in enumerate(zip(members.seeds, members.dirs)):
            row = distill_row(
                run | {"seed": seed}, outcomes[k], selection, selected[k], scores[k],
                metrics.columns("fidelity_rmse_gaussian", gaussian[k], targets),
                {"wall_s": ending.wall, "members": len(members.seeds), "device": str(device),
                 "prior_ratio": ratio[k],
                 "status": evaluation.final_status(ending.statuses[k], ratio[k]),
                 "teacher_path": teacher.sources[k]}, ending.interrupted)
            save_student(member_dir / ("student.pt" if n == 0 else f"student_{selection}.pt"),
                         loop, k, run, teacher.scalers[k], features, targets, row, run_config)
            rows[k].append(row)
    for member_dir, history in zip(members.dirs, loop.history):
        tables.write_history(member_dir, history)
    return pd.concat([tables.write_metrics(d, r) for d, r in zip(members.dirs, rows)],
                     ignore_index=True)


def save_student(path: Path, loop: StudentLoop, k: int, run: dict[str, Any], scaler,
                 features: list[str], targets: list[str], row: dict[str, Any],
                 run_config: dict[str, Any]) -> None:
    """Member k's student as a dfkd checkpoint: weights, architecture, scaler, columns, its
    metrics row and the run's config (what a later resume=true compares and puts back)."""
    checkpoints.save_checkpoint(
        path, loop.student.member_state_dict(k), arch=run["arch"], scaler=scaler.payload(),
        features=list(features), targets=list(targets), dataset=run["dataset"],
        seed=row["seed"], metrics=row, config=run["config"], run_config=run_config)
