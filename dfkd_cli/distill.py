"""`dfkd distill`: the student loop (Zhou & Chiam 2023, Eq. 6).

For epoch t of E, alpha = alpha(t), and each of n_s steps draws x_g from the strategy and
x_p ~ N(0, I), both of batch size m, and minimises

    L_S = alpha(t) * mean((T(x_g) - S(x_g))^2) + (1 - alpha(t)) * mean((T(x_p) - S(x_p))^2).

A term whose weight is 0 is not computed (its samples are not drawn). The loop is a tensor
program over a population of K members (`seeds=[...]`; K = 1 for `seed=`): member k has its own
teacher, split, student, strategy state and random stream, and ends exactly as a separate run
with seed k would. No host syncs inside an epoch; losses and diagnostics are read every
`log_every` epochs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dfkd_cli import evaluation, models, runtime, tables
from dfkd_cli import teacher as teachers
from dfkd_cli.data import Split, load_table, split
from dfkd_cli.errors import UserError
from dfkd_cli.optim import make_optimizer
from dfkd_cli.rng import Streams
from dfkd_cli.strategies import STRATEGIES, batch_diagnostics

log = logging.getLogger(__name__)

SUMMARY = ["dataset", "seed", "arm", "strategy", "alpha", "selection", "teacher_rmse", "student_rmse",
           "fidelity_rmse", "student_r2", "wall_s", "device", "status"]


def alpha_at(cfg, epoch: int, epochs: int) -> float:
    """alpha(t): decreasing 1 - (t+1)/E (the paper's), increasing (t+1)/E, or constant."""
    if cfg.schedule == "decreasing":
        return 1.0 - (epoch + 1) / epochs
    if cfg.schedule == "increasing":
        return (epoch + 1) / epochs
    return float(cfg.value)


def alpha_label(cfg) -> str:
    return f"constant{cfg.value:g}" if cfg.schedule == "constant" else cfg.schedule


def arm_label(cfg) -> str:
    """The arm's name in tables: `label` when set (the arm presets set it), else
    <strategy>_<alpha>_m<batch size>."""
    return cfg.label or f"{cfg.strategy.name}_{alpha_label(cfg.alpha)}_m{cfg.batch_size}"


def member_seeds(cfg) -> list[int]:
    """The population: `seeds=[...]` when given, else the single `seed`."""
    seeds = [int(s) for s in cfg.seeds] if cfg.seeds else [int(cfg.seed)]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds={seeds} repeats a seed; each member needs its own")
    return seeds


@torch.no_grad()
def student_step(teacher, student: models.StackedMLP, opt: torch.optim.Optimizer,
                 x: torch.Tensor, n_g: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on L_S for x = [x_g; x_p] (the first n_g rows of each member's batch
    are x_g). Back-propagates by hand (StackedMLP.param_grads); returns the per-member means of
    (T - S)^2 on x_g and on x_p, shape (K,) each. The members are independent: member k's
    gradient comes from member k's loss only."""
    n_p = x.shape[1] - n_g
    saved = student.trace(x)
    diff = saved[-1] - teacher(x)
    squared = diff.pow(2).sum(dim=2)
    zero = squared.new_zeros(squared.shape[0])
    loss_g = squared[:, :n_g].mean(dim=1) if n_g else zero
    loss_p = squared[:, n_g:].mean(dim=1) if n_p else zero
    row_weight = torch.cat([x.new_full((n_g,), 2 * alpha / max(n_g, 1)),
                            x.new_full((n_p,), 2 * (1 - alpha) / max(n_p, 1))]).view(1, -1, 1)
    for p, g in zip(student.parameters(), student.param_grads(saved, diff * row_weight)):
        p.grad = g
    opt.step()
    return loss_g, loss_p


class BestKeeper:
    """Per member, the student weights of the epoch with the lowest validation RMSE
    (selection=val), kept with tensor ops only, so checking every epoch costs no host sync."""

    def __init__(self, student: models.StackedMLP):
        self.params = list(student.parameters())
        self.best = [p.detach().clone() for p in self.params]
        members, device = student.members, self.params[0].device
        self.best_loss = torch.full((members,), float("inf"), device=device)
        self.best_epoch = torch.full((members,), -1, device=device)

    @torch.no_grad()
    def offer(self, loss: torch.Tensor, epoch: int) -> None:
        better = loss < self.best_loss
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_epoch = torch.where(better, epoch, self.best_epoch)
        for kept, current in zip(self.best, self.params):
            kept.copy_(torch.where(better.view(-1, 1, 1), current, kept))

    @torch.no_grad()
    def restore(self) -> list[int]:
        for kept, current in zip(self.best, self.params):
            current.copy_(kept)
        return self.best_epoch.tolist()


def train_student(cfg, teacher: teachers.Teacher, student: models.StackedMLP, strategy,
                  val: tuple[torch.Tensor, torch.Tensor] | None
                  ) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """E epochs x n_s steps of L_S; returns each member's history rows and selected epoch."""
    T, S, m, members = teacher.module, student, cfg.batch_size, student.members
    opt = make_optimizer(cfg.optimizer, S.parameters())
    keeper = BestKeeper(S) if cfg.selection == "val" else None
    zero = torch.zeros(members, device=S.weights[0].device)
    history: list[list[dict[str, Any]]] = [[] for _ in range(members)]
    strategy.prepare(T)
    sums = {"loss": zero.clone(), "loss_g": zero.clone(), "loss_p": zero.clone()}
    steps_logged = 0
    for epoch in runtime.progress(range(cfg.epochs), cfg.progress, desc=cfg.strategy.name):
        alpha = alpha_at(cfg.alpha, epoch, cfg.epochs)
        diagnostics = strategy.update(T, S) if alpha > 0 else {}
        x_g = None
        n_g = m if alpha > 0 else 0
        for _ in range(cfg.steps_per_epoch):
            batches = []
            if alpha > 0:
                x_g = strategy.sample(T, S, m)
                batches.append(x_g)
            if alpha < 1:
                batches.append(strategy.prior(m))
            x = torch.cat(batches, dim=1) if len(batches) > 1 else batches[0]
            loss_g, loss_p = student_step(T, S, opt, x, n_g, alpha)
            sums["loss"] += alpha * loss_g + (1 - alpha) * loss_p
            sums["loss_g"] += loss_g
            sums["loss_p"] += loss_p
            steps_logged += 1
        val_rmse = None
        if keeper is not None:
            with torch.no_grad():
                val_rmse = (S(val[0]) - val[1]).pow(2).mean(dim=(1, 2)).sqrt()
            keeper.offer(val_rmse, epoch)
        if (epoch + 1) % cfg.log_every == 0 or epoch == cfg.epochs - 1:
            stats = {k: v / steps_logged for k, v in sums.items()} | diagnostics
            if x_g is not None:
                stats |= batch_diagnostics(T, S, x_g, strategy.start, teacher.box)
            if val_rmse is not None:
                stats["val_rmse"] = val_rmse
            columns = {k: v.tolist() for k, v in stats.items()}  # one host sync per log row
            for k in range(members):
                history[k].append({"epoch": epoch, "alpha": alpha,
                                   **{name: values[k] for name, values in columns.items()}})
            sums = {k: zero.clone() for k in sums}
            steps_logged = 0
    selected = keeper.restore() if keeper is not None else [cfg.epochs - 1] * members
    return history, selected


def stacked(splits: list[Split], part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, n, d) inputs and (K, n, 1) targets of one part (val / test) of each member's split."""
    return (torch.stack([getattr(s, f"x_{part}") for s in splits]),
            torch.stack([getattr(s, f"y_{part}") for s in splits]))


def run(cfg, run_dir: Path) -> pd.DataFrame:
    """`dfkd distill`: load the teachers, distil the students, evaluate, write the tables."""
    device = runtime.resolve_device(cfg.device)
    seeds = member_seeds(cfg)
    table = load_table(cfg.dataset, cfg.data_dir)
    splits = [split(table, cfg.dataset.n_train, cfg.dataset.val_fraction, s).to(device)
              for s in seeds]
    teacher = teachers.load(cfg, seeds, splits[0].input_dim, device)
    runtime.seed_everything(seeds[0])
    rng = Streams(seeds, device)
    student = models.StackedMLP(len(seeds), teacher.input_dim, list(cfg.student.hidden),
                                cfg.student.activation).to(device).init_(rng)
    strategy = STRATEGIES[cfg.strategy.name](cfg.strategy, teacher.input_dim, teacher.box, rng)
    started = time.perf_counter()
    history, selected = train_student(cfg, teacher, student, strategy, stacked(splits, "val"))
    wall = time.perf_counter() - started
    x_test, y_test = stacked(splits, "test")
    t_pred = evaluation.predict(teacher.module, x_test)
    s_pred = evaluation.predict(student, x_test)
    rows = []
    for k, (seed, part) in enumerate(zip(seeds, splits)):
        member_dir = Path(run_dir) / f"seed{seed}" if cfg.seeds else Path(run_dir)
        row = {"command": "distill", "dataset": part.name, "seed": seed,
               "arm": arm_label(cfg), "strategy": cfg.strategy.name,
               "alpha": alpha_label(cfg.alpha),
               "selection": cfg.selection,
               "teacher_hidden": models.arch_name(list(cfg.teacher.hidden),
                                                  cfg.teacher.activation),
               "student_hidden": models.arch_name(list(cfg.student.hidden),
                                                  cfg.student.activation),
               "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
               "batch_size": cfg.batch_size, "selected_epoch": selected[k],
               "teacher_rmse": evaluation.rmse(t_pred[k], y_test[k]),
               "student_rmse": evaluation.rmse(s_pred[k], y_test[k]),
               "fidelity_rmse": evaluation.rmse(s_pred[k], t_pred[k]),
               "teacher_r2": evaluation.r2(t_pred[k], y_test[k]),
               "student_r2": evaluation.r2(s_pred[k], y_test[k]),
               "student_rmse_original": evaluation.rmse(s_pred[k], y_test[k]) * part.y_std,
               "wall_s": wall, "members": len(seeds), "device": str(device), "status": "ok",
               "teacher_path": teacher.sources[k]}
        models.save_checkpoint(
            member_dir / "student.pt", student.member_state_dict(k),
            arch={"input_dim": teacher.input_dim, "hidden": list(cfg.student.hidden),
                  "activation": cfg.student.activation, "output_dim": 1},
            scaler={"x_mean": part.x_mean.cpu(), "x_std": part.x_std.cpu(),
                    "y_mean": part.y_mean, "y_std": part.y_std},
            dataset=part.name, seed=seed, metrics=row)
        tables.write_history(member_dir, history[k])
        rows.append(tables.write_metrics(member_dir, row))
    frame = pd.concat(rows, ignore_index=True)
    print(tables.show(frame, SUMMARY))
    return frame
