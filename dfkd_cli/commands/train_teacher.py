"""`dfkd train-teacher`: train the teachers for (dataset, seed) into the teacher store.

Training follows the paper's settings (Zhou & Chiam 2023, Sec. 4.1): MLP with 500 tanh units,
RMSprop lr 1e-3, weight decay 1e-5, batch 16, up to 500 epochs, ReduceLROnPlateau(factor 0.5),
early stopping on validation loss (patience 50), best validation epoch kept.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf

from dfkd_cli.commands import records
from dfkd_cli.data import domains
from dfkd_cli.data.datasets import Split, load_table, split_for, stacked
from dfkd_cli.errors import UserError
from dfkd_cli.loop import resume
from dfkd_cli.nets import architecture, checkpoints, factory, metrics, mlp
from dfkd_cli.nets.optim import make_optimizer
from dfkd_cli.teachers import scikit_learn as sklearn_teacher
from dfkd_cli.teachers import spec as teacher_spec
from dfkd_cli.teachers import store as teacher_store
from dfkd_cli.teachers.loader import override_domains
from dfkd_cli.teachers.store import arch_label
from dfkd_cli.utils import run_dirs, runtime
from dfkd_cli.utils import run_tables as tables
from dfkd_cli.utils.files import exclusive_lock
from dfkd_cli.utils.progress import Progress
from dfkd_cli.utils.rng import Streams

log = logging.getLogger(__name__)

SUMMARY = ["dataset", "seed", "teacher_hidden", "best_epoch", "teacher_rmse", "teacher_r2",
           "wall_s", "status"]


class Plateau:
    """torch.optim.lr_scheduler.ReduceLROnPlateau's rule (mode min, relative threshold 1e-4,
    patience 10) for one member: `step(loss)` returns the factor to apply to its learning rate."""

    def __init__(self, factor: float, patience: int = 10, threshold: float = 1e-4):
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.best, self.bad = float("inf"), 0

    def step(self, loss: float) -> float:
        if loss < self.best * (1 - self.threshold):
            self.best, self.bad = loss, 0
            return 1.0
        self.bad += 1
        if self.bad > self.patience:
            self.bad = 0
            return self.factor
        return 1.0


@torch.no_grad()
def _step(model, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          lr_scale: list[float]) -> torch.Tensor:
    """One optimiser step on each member's mean squared error; returns the (K,) losses.
    `lr_scale` scales each member's update (its learning rate relative to the configured one;
    0 freezes a member): exact for RMSprop, Adam and SGD, whose state does not depend on the
    learning rate."""
    saved = model.trace(x)
    diff = saved[-1] - y
    params = model.opt_params
    for p, g in zip(params, model.param_grads(saved, diff * (2 / x.shape[1]))):
        p.grad = g
    scaled = any(s != 1.0 for s in lr_scale)
    before = [p.clone() for p in params] if scaled else None
    opt.step()
    if before is not None:
        if model.owners is None:  # stacked (K, ...) parameters
            scale = torch.tensor(lr_scale, device=x.device)
            for p, old in zip(params, before):
                p.copy_(torch.lerp(old, p, mlp.per_member(scale, p)))
        else:  # each member's own parameters: only the scaled members' change
            for p, old, k in zip(params, before, model.owners):
                if lr_scale[k] != 1.0:
                    p.copy_(torch.lerp(old, p, lr_scale[k]))
    return diff.pow(2).sum(dim=2).mean(dim=1)


def fit(cfg, splits: list[Split], seeds: list[int], device: torch.device):
    """Train one teacher per (seed, split) in one batched program: mini-batches, a per-member
    plateau LR decay and early stopping on validation loss, each member keeping its best epoch.
    A member trained alone or in a population ends the same. Returns the population, its
    architecture, each member's history and best epoch."""
    members = len(seeds)
    rng = Streams(seeds, device)
    arch = architecture.describe(cfg.teacher, splits[0].input_dim, len(splits[0].targets),
                             cfg.dataset.input_shape)
    model = factory.build(arch, rng, cfg.fast_path)
    opt = make_optimizer(cfg.optimizer, model.opt_params,
                         fast=isinstance(model, mlp.StackedMLP))
    best = mlp.Snapshot(model.params)
    x, y = stacked(splits, "train")
    x_val, y_val = stacked(splits, "val")
    rows = torch.arange(members, device=device).unsqueeze(1)
    plateaus = [Plateau(cfg.lr_factor) for _ in seeds]
    lr_scale = [1.0] * members
    best_loss, best_epoch, waited = [float("inf")] * members, [0] * members, [0] * members
    history: list[list[dict[str, Any]]] = [[] for _ in seeds]
    progress = Progress("teacher", cfg.epochs, cfg.progress_every, cfg.progress,
                        early_stop=True)
    for epoch in range(cfg.epochs):
        order = torch.stack([torch.randperm(x.shape[1], generator=g, device=device)
                             for g in rng.generators])
        total = torch.zeros(members, device=device)
        for i in range(0, x.shape[1], cfg.batch_size):
            batch = order[:, i:i + cfg.batch_size]
            total += _step(model, opt, x[rows, batch], y[rows, batch], lr_scale) * batch.shape[1]
        val_loss = (model(x_val) - y_val).pow(2).sum(dim=2).mean(dim=1).tolist()
        train_mse = (total / x.shape[1]).tolist()
        improved = []
        for k in range(members):
            if waited[k] >= cfg.patience:  # stopped already
                improved.append(False)
                continue
            lr_scale[k] *= plateaus[k].step(val_loss[k])
            improved.append(val_loss[k] < best_loss[k])
            if improved[k]:
                best_loss[k], best_epoch[k], waited[k] = val_loss[k], epoch, 0
            else:
                waited[k] += 1
            if waited[k] >= cfg.patience:
                lr_scale[k] = 0.0
                log.info("seed %d: early stop at epoch %d (best epoch %d)", seeds[k], epoch,
                         best_epoch[k])
            if epoch % cfg.log_every == 0 or waited[k] >= cfg.patience:
                history[k].append({"epoch": epoch, "train_mse": train_mse[k],
                                   "val_mse": val_loss[k],
                                   "lr": cfg.optimizer.lr * lr_scale[k]})
        best.take(torch.tensor(improved, device=device))
        progress.update(epoch + 1, lambda: _figures(val_loss, waited, cfg.patience))
        if all(w >= cfg.patience for w in waited):
            break
    progress.close()
    best.restore(torch.ones(members, dtype=torch.bool, device=device))
    return model.eval(), arch, history, best_epoch


def _figures(val_loss: list[float], waited: list[int], patience: int) -> str:
    """The progress line's figures: members still training and their mean validation MSE."""
    training = [loss for loss, w in zip(val_loss, waited) if w < patience]
    figures = f"{len(training)}/{len(val_loss)} members training"
    return figures + (f", val MSE {sum(training) / len(training):.4g}" if training else "")


def finite(state: dict[str, torch.Tensor], row: dict) -> bool:
    """A teacher worth storing: finite weights and finite test scores."""
    scores = [v for k, v in row.items() if k.startswith("teacher_") and isinstance(v, float)]
    return (all(bool(torch.isfinite(v).all()) for v in state.values())
            and all(math.isfinite(v) for v in scores))


def run(cfg, run_dir: Path) -> pd.DataFrame:
    """`dfkd train-teacher`: train the teachers for (dataset, seed) into the teacher store, one
    for `seed=` or a population for `seeds=[...]` in one batched program.

    Concurrent jobs for the same teacher take turns on a lock file beside it: the first trains
    and writes it atomically, the others find it there and reuse it (status `exists`)."""
    device = runtime.resolve_device(cfg.device)
    members = records.members(cfg, run_dir)
    seeds, dirs = members.seeds, members.dirs
    try:
        run_dirs.refuse_taken(dirs, run_dir, cfg.resume, cfg.overwrite)
    except run_dirs.RunDirTaken:
        resume.put_back(run_dir, None)  # the .hydra/ files as they were before Hydra wrote
        raise
    if cfg.resume and run_dirs.finished(dirs):
        resume.put_back(run_dir, None)  # left as it is: .hydra/ too
        log.info("resume=true: %s has finished already; nothing to do", run_dir)
        return pd.concat([pd.read_csv(d / tables.METRICS) for d in dirs], ignore_index=True)
    store = records.teacher_store(cfg)
    paths = [store.path(seed) for seed in seeds]
    table = load_table(cfg.dataset, cfg.data_dir)
    if cfg.domain_spec:  # a bad one is found before any training (applied once fitted)
        domains.override(domains.Domain.continuous(table.x.shape[1]),
                         teacher_spec.domain_values(cfg.domain_spec), table.features,
                         f"domain_spec={cfg.domain_spec}")
    rows = {}
    with ExitStack() as locks:
        for path in sorted(paths):
            locks.enter_context(exclusive_lock(path.with_name(path.name + ".lock")))
        for seed, path, member_dir in zip(seeds, paths, dirs):
            if path.exists() and not cfg.overwrite:
                log.info("teacher %s exists; keeping it (overwrite=true retrains)", path)
                stored = (sklearn_teacher.stored_row(path) if cfg.teacher.format == "sklearn"
                          else store.read(path, seed).get("metrics") or {})
                why = teacher_store.split_mismatch(cfg.dataset, str(path),
                                                   teacher_store.split_size(stored),
                                                   split_for(cfg.dataset, table, seed))
                if why:
                    raise UserError(f"{why}; overwrite=true retrains it, or teacher_store=<dir> "
                                    "keeps teachers for these settings apart")
                rows[seed] = tables.write_metrics(member_dir, {**stored, "status": "exists"})
        todo = [k for k, seed in enumerate(seeds) if seed not in rows]
        if todo:
            todo_seeds, todo_paths, todo_dirs = ([v[k] for k in todo] for v in (seeds, paths, dirs))
            trained = (sklearn_teacher.train(
                cfg.teacher, cfg.dataset, table, todo_seeds, todo_paths, todo_dirs,
                arch_label(cfg.teacher),
                lambda rows: override_domains(cfg.domain_spec, [domains.infer(rows)],
                                              table.features)[0])
                       if cfg.teacher.format == "sklearn" else
                       _train(cfg, table, todo_seeds, todo_paths, todo_dirs, device))
            rows.update(zip((seeds[k] for k in todo), trained))
    frame = pd.concat([rows[s] for s in seeds], ignore_index=True)
    print(tables.show(frame, SUMMARY))
    return frame


def _train(cfg, table, seeds: list[int], paths: list[Path], dirs: list[Path],
           device: torch.device) -> list[pd.DataFrame]:
    splits = [split_for(cfg.dataset, table, s).to(device) for s in seeds]
    runtime.seed_everything(seeds[0])
    started = time.perf_counter()
    model, arch, history, best_epoch = fit(cfg, splits, seeds, device)
    wall = time.perf_counter() - started
    found = override_domains(cfg.domain_spec,
                             [domains.infer(table.x[part.rows[0]]) for part in splits],
                             table.features)
    domains.write(dirs, found, table.features)
    x_test = torch.stack([s.x_test for s in splits])
    test_pred = metrics.predict(model, x_test)
    frames = []
    for k, (seed, part, path, member_dir) in enumerate(zip(seeds, splits, paths, dirs)):
        row = {"command": "train-teacher", "dataset": part.name, "seed": seed,
               "teacher_hidden": arch_label(cfg.teacher),
               "n_train": len(part.x_train), "n_val": len(part.x_val),
               "n_test": len(part.x_test), "best_epoch": best_epoch[k],
               "epochs_run": history[k][-1]["epoch"] + 1,
               **metrics.scores("teacher", test_pred[k], part.y_test, part.targets,
                                part.scaler.y_std),
               "wall_s": wall, "members": len(seeds), "device": str(device), "status": "ok",
               "teacher_path": str(path)}
        if not finite(model.member_state_dict(k), row):
            log.warning("teacher of seed %d diverged (non-finite weights or scores): not "
                        "stored", seed)
            frames.append(tables.write_metrics(member_dir, row | {"status": "diverged",
                                                                  "teacher_path": ""}))
            continue
        checkpoints.save_checkpoint(
            path, model.member_state_dict(k),
            arch=arch,
            input_spec={"features": list(part.features),
                        "input_shape": architecture.to_plain(cfg.dataset.input_shape),
                        "low": part.x_train.min(0).values.cpu(),
                        "high": part.x_train.max(0).values.cpu(),
                        "domain": found[k].payload()},
            scaler=part.scaler.payload(), targets=list(part.targets), dataset=part.name,
            seed=seed, metrics=row, config=OmegaConf.to_yaml(cfg))
        tables.write_history(member_dir, history[k])
        log.info("teacher written to %s", path)
        frames.append(tables.write_metrics(member_dir, row))
    return frames
