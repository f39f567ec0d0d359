"""`dfkd distill`: the student loop (Zhou & Chiam 2023, Eq. 6).

For epoch t of E, alpha = alpha(t), and each of n_s steps draws x_g from the strategy and
x_p ~ N(0, I), both of batch size m, and minimises

    L_S = alpha(t) * mean((T(x_g) - S(x_g))^2) + (1 - alpha(t)) * mean((T(x_p) - S(x_p))^2).

A term whose weight is 0 is not computed (its samples are not drawn). The loop is a tensor
program: no host syncs inside an epoch; losses and diagnostics are read every `log_every` epochs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfkd_cli import evaluation, models, runtime, tables
from dfkd_cli import teacher as teachers
from dfkd_cli.data import load_split
from dfkd_cli.optim import make_optimizer
from dfkd_cli.strategies import STRATEGIES, batch_diagnostics

log = logging.getLogger(__name__)

SUMMARY = ["dataset", "seed", "strategy", "alpha", "selection", "teacher_rmse", "student_rmse",
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


def squared_gap(teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(T(x) - S(x))^2 per sample, summed over outputs; gradients flow to the student only."""
    with torch.no_grad():
        target = teacher(x)
    return (target - student(x)).pow(2).sum(dim=1)


class BestKeeper:
    """Keeps the student weights of the epoch with the lowest validation RMSE (selection=val),
    with tensor ops only, so checking every epoch costs no host sync."""

    def __init__(self, student: nn.Module):
        self.params = list(student.state_dict().values())
        self.best = [p.detach().clone() for p in self.params]
        self.best_loss = torch.tensor(float("inf"), device=self.params[0].device)
        self.best_epoch = torch.tensor(-1, device=self.params[0].device)

    @torch.no_grad()
    def offer(self, loss: torch.Tensor, epoch: int) -> None:
        better = loss < self.best_loss
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_epoch = torch.where(better, torch.full_like(self.best_epoch, epoch),
                                      self.best_epoch)
        for kept, current in zip(self.best, self.params):
            kept.copy_(torch.where(better, current, kept))

    @torch.no_grad()
    def restore(self, student: nn.Module) -> int:
        for kept, current in zip(self.best, self.params):
            current.copy_(kept)
        return int(self.best_epoch)


def train_student(cfg, teacher: teachers.Teacher, student: nn.Module, strategy,
                  val: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[list[dict], int]:
    """E epochs x n_s steps of L_S; returns the history rows and the selected epoch."""
    T, S, m = teacher.module, student, cfg.batch_size
    opt = make_optimizer(cfg.optimizer, S.parameters())
    keeper = BestKeeper(S) if cfg.selection == "val" else None
    zero = torch.zeros((), device=next(S.parameters()).device)
    history: list[dict[str, Any]] = []
    sums = {"loss": zero.clone(), "loss_g": zero.clone(), "loss_p": zero.clone()}
    steps_logged = 0
    for epoch in runtime.progress(range(cfg.epochs), cfg.progress, desc=cfg.strategy.name):
        alpha = alpha_at(cfg.alpha, epoch, cfg.epochs)
        diagnostics = strategy.update(T, S) if alpha > 0 else {}
        x_g = None
        for _ in range(cfg.steps_per_epoch):
            loss_g = loss_p = zero
            if alpha > 0:
                x_g = strategy.sample(T, S, m)
                loss_g = squared_gap(T, S, x_g).mean()
            if alpha < 1:
                loss_p = squared_gap(T, S, strategy.prior(m)).mean()
            loss = alpha * loss_g + (1 - alpha) * loss_p
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for key, value in (("loss", loss), ("loss_g", loss_g), ("loss_p", loss_p)):
                sums[key] += value.detach()
            steps_logged += 1
        val_rmse = None
        if keeper is not None:
            with torch.no_grad():
                val_rmse = (S(val[0]) - val[1]).pow(2).mean().sqrt()
            keeper.offer(val_rmse, epoch)
        if (epoch + 1) % cfg.log_every == 0 or epoch == cfg.epochs - 1:
            row = {"epoch": epoch, "alpha": alpha,
                   **{k: float(v) / steps_logged for k, v in sums.items()},
                   **{k: float(v) for k, v in diagnostics.items()}}
            if x_g is not None:
                row.update(batch_diagnostics(T, S, x_g, strategy.start, teacher.box))
            if val_rmse is not None:
                row["val_rmse"] = float(val_rmse)
            history.append(row)
            sums = {k: zero.clone() for k in sums}
            steps_logged = 0
    selected = keeper.restore(S) if keeper is not None else cfg.epochs - 1
    return history, selected


def run(cfg, run_dir: Path) -> Any:
    """`dfkd distill`: load the teacher, distil a student, evaluate, write the tables."""
    device = runtime.resolve_device(cfg.device)
    split = load_split(cfg).to(device)
    teacher = teachers.load(cfg, split, device)
    runtime.seed_everything(cfg.seed)
    student = models.mlp(teacher.input_dim, list(cfg.student.hidden),
                         cfg.student.activation).to(device)
    strategy = STRATEGIES[cfg.strategy.name](cfg.strategy, teacher.input_dim, teacher.box, device)
    started = time.perf_counter()
    history, selected = train_student(cfg, teacher, student, strategy,
                                      (split.x_val, split.y_val))
    wall = time.perf_counter() - started
    student.eval()
    t_pred = evaluation.predict(teacher.module, split.x_test)
    s_pred = evaluation.predict(student, split.x_test)
    row = {"command": "distill", "dataset": split.name, "seed": cfg.seed,
           "strategy": cfg.strategy.name, "alpha": alpha_label(cfg.alpha),
           "selection": cfg.selection,
           "teacher_hidden": models.arch_name(list(cfg.teacher.hidden), cfg.teacher.activation),
           "student_hidden": models.arch_name(list(cfg.student.hidden), cfg.student.activation),
           "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
           "batch_size": cfg.batch_size, "selected_epoch": selected,
           "teacher_rmse": evaluation.rmse(t_pred, split.y_test),
           "student_rmse": evaluation.rmse(s_pred, split.y_test),
           "fidelity_rmse": evaluation.rmse(s_pred, t_pred),
           "teacher_r2": evaluation.r2(t_pred, split.y_test),
           "student_r2": evaluation.r2(s_pred, split.y_test),
           "student_rmse_original": evaluation.rmse(s_pred, split.y_test) * split.y_std,
           "wall_s": wall, "device": str(device), "status": "ok",
           "teacher_path": teacher.source}
    models.save_checkpoint(
        Path(run_dir) / "student.pt", student,
        arch={"input_dim": teacher.input_dim, "hidden": list(cfg.student.hidden),
              "activation": cfg.student.activation, "output_dim": 1},
        scaler={"x_mean": split.x_mean.cpu(), "x_std": split.x_std.cpu(),
                "y_mean": split.y_mean, "y_std": split.y_std},
        dataset=split.name, seed=cfg.seed, metrics=row)
    tables.write_history(run_dir, history)
    frame = tables.write_metrics(run_dir, row)
    print(tables.show(frame, SUMMARY))
    return frame
