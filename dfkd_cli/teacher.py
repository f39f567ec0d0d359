"""`dfkd train-teacher`, the teacher store, and loading a teacher for distillation.

Training follows the paper's settings (Zhou & Chiam 2023, Sec. 4.1): MLP with 500 tanh units,
RMSprop lr 1e-3, weight decay 1e-5, batch 16, up to 500 epochs, ReduceLROnPlateau(factor 0.5),
early stopping on validation loss (patience 50), best validation epoch kept.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from dfkd_cli import evaluation, models, runtime, tables
from dfkd_cli.data import Split, load_table, split
from dfkd_cli.errors import UserError
from dfkd_cli.files import exclusive_lock
from dfkd_cli.optim import make_optimizer
from dfkd_cli.rng import Streams, member_seeds
from dfkd_cli.strategies.base import Box

log = logging.getLogger(__name__)

SUMMARY = ["dataset", "seed", "teacher_hidden", "best_epoch", "teacher_rmse", "teacher_r2",
           "wall_s", "status"]


@dataclass
class Teacher:
    """Frozen teachers for a population (one per member, or one shared), with their input box."""

    module: nn.Module  # (K, n, d) -> (K, n, out)
    input_dim: int
    box: Box | None  # per-member, per-feature min / max of the training rows, standardised
    sources: list[str]


class Shared(nn.Module):
    """One network applied to every member of a population: (K, n, d) -> (K, n, out).

    Offers StackedMLP's `trace` / `input_grad` through autograd, so strategies that need
    dL/dx treat a foreign (e.g. TorchScript) teacher like a dfkd one."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, n, d = x.shape
        return self.net(x.reshape(members * n, d)).reshape(members, n, -1)

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return [x, self(x)]

    def input_grad(self, saved: list[torch.Tensor], grad_out: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(saved[-1], saved[0], grad_out)[0]


def store_path(cfg, seed: int) -> Path:
    """Where the teacher for (dataset, architecture, seed) lives in the teacher store."""
    arch = models.arch_name(list(cfg.teacher.hidden), cfg.teacher.activation)
    return Path(cfg.teacher_store) / cfg.dataset.name / arch / f"seed{seed}" / "teacher.pt"


def _train_command(cfg, seed: int) -> str:
    overrides = [f"dataset={cfg.dataset.name}", f"seed={seed}"]
    if cfg.dataset.source != "builtin":
        overrides.append(f"data_dir={cfg.data_dir}")
    return "dfkd train-teacher " + " ".join(overrides)


def _read(cfg, path: Path, seed: int | None) -> dict[str, Any]:
    if not path.is_file():
        hint = "" if seed is None else f"; train it first with: {_train_command(cfg, seed)}"
        raise UserError(f"no teacher checkpoint at {path}{hint}")
    return models.load_checkpoint(path)


def load(cfg, seeds: list[int], input_dim: int, device: torch.device) -> Teacher:
    """The configured teacher for members `seeds`: one store teacher per seed, or the single
    checkpoint / TorchScript file the user named, shared by every member."""
    spec = cfg.teacher
    members = len(seeds)
    if spec.format == "torchscript":
        if not spec.path or spec.input_dim is None:
            raise UserError("teacher.format=torchscript needs teacher.path=<file> and "
                            "teacher.input_dim=<d>")
        if not Path(spec.path).is_file():
            raise UserError(f"teacher.path={spec.path} not found")
        module, dim, box = Shared(torch.jit.load(spec.path, map_location="cpu")), spec.input_dim, None
        sources = [spec.path] * members
    else:
        if spec.path:
            payloads = [_read(cfg, Path(spec.path), None)] * members
            sources = [spec.path] * members
        else:
            paths = [store_path(cfg, seed) for seed in seeds]
            payloads = [_read(cfg, path, seed) for path, seed in zip(paths, seeds)]
            sources = [str(p) for p in paths]
        archs = {(p["arch"]["input_dim"], tuple(p["arch"]["hidden"]), p["arch"]["activation"])
                 for p in payloads}
        if len(archs) > 1:
            raise UserError(f"teachers {sources} differ in architecture: {sorted(archs)}")
        dim = payloads[0]["arch"]["input_dim"]
        module = models.StackedMLP.from_state_dicts([p["state_dict"] for p in payloads],
                                                    payloads[0]["arch"]["activation"])
        box = (torch.stack([p["input_spec"]["low"] for p in payloads]).to(device),
               torch.stack([p["input_spec"]["high"] for p in payloads]).to(device))
    if dim != input_dim:
        raise UserError(f"teacher {sources[0]} takes {dim} inputs but dataset "
                        f"{cfg.dataset.name!r} has {input_dim} features")
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return Teacher(module, dim, box, sources)


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
def _step(model: models.StackedMLP, opt: torch.optim.Optimizer, x: torch.Tensor,
          y: torch.Tensor, lr_scale: torch.Tensor | None) -> torch.Tensor:
    """One optimiser step on each member's mean squared error; returns the (K,) losses.
    `lr_scale` (K, 1, 1) scales each member's update (its learning rate relative to the
    configured one; 0 freezes a member): exact for RMSprop, Adam and SGD, whose state does not
    depend on the learning rate."""
    saved = model.trace(x)
    diff = saved[-1] - y
    params = list(model.parameters())
    for p, g in zip(params, model.param_grads(saved, diff * (2 / x.shape[1]))):
        p.grad = g
    before = [p.clone() for p in params] if lr_scale is not None else None
    opt.step()
    if before is not None:
        for p, old in zip(params, before):
            p.copy_(torch.lerp(old, p, lr_scale))
    return diff.pow(2).sum(dim=2).mean(dim=1)


def fit(cfg, splits: list[Split], seeds: list[int], device: torch.device
        ) -> tuple[models.StackedMLP, list[list[dict[str, Any]]], list[int]]:
    """Train one teacher per (seed, split) in one batched program: mini-batches, a per-member
    plateau LR decay and early stopping on validation loss, each member keeping its best epoch.
    A member trained alone or in a population ends the same."""
    members = len(seeds)
    rng = Streams(seeds, device)
    model = models.StackedMLP(members, splits[0].input_dim, list(cfg.teacher.hidden),
                              cfg.teacher.activation).to(device).init_(rng)
    opt = make_optimizer(cfg.optimizer, model.parameters())
    best = models.Snapshot(list(model.parameters()))
    x, y = (torch.stack([getattr(s, k) for s in splits]) for k in ("x_train", "y_train"))
    x_val, y_val = (torch.stack([getattr(s, k) for s in splits]) for k in ("x_val", "y_val"))
    rows = torch.arange(members, device=device).unsqueeze(1)
    plateaus = [Plateau(cfg.lr_factor) for _ in seeds]
    lr_scale = [1.0] * members
    best_loss, best_epoch, waited = [float("inf")] * members, [0] * members, [0] * members
    history: list[list[dict[str, Any]]] = [[] for _ in seeds]
    for epoch in runtime.progress(range(cfg.epochs), cfg.progress, desc="teacher"):
        scale = (None if all(s == 1.0 for s in lr_scale) else
                 torch.tensor(lr_scale, device=device).view(-1, 1, 1))
        order = torch.stack([torch.randperm(x.shape[1], generator=g, device=device)
                             for g in rng.generators])
        total = torch.zeros(members, device=device)
        for i in range(0, x.shape[1], cfg.batch_size):
            batch = order[:, i:i + cfg.batch_size]
            total += _step(model, opt, x[rows, batch], y[rows, batch], scale) * batch.shape[1]
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
        if all(w >= cfg.patience for w in waited):
            break
    best.restore(torch.ones(members, dtype=torch.bool, device=device))
    return model.eval(), history, best_epoch


def run(cfg, run_dir: Path) -> pd.DataFrame:
    """`dfkd train-teacher`: train the teachers for (dataset, seed) into the teacher store, one
    for `seed=` or a population for `seeds=[...]` in one batched program.

    Concurrent jobs for the same teacher take turns on a lock file beside it: the first trains
    and writes it atomically, the others find it there and reuse it (status `exists`)."""
    device = runtime.resolve_device(cfg.device)
    seeds = member_seeds(cfg)
    dirs = [Path(run_dir) / f"seed{s}" for s in seeds] if cfg.seeds else [Path(run_dir)]
    paths = [store_path(cfg, seed) for seed in seeds]
    table = load_table(cfg.dataset, cfg.data_dir)
    rows = {}
    with ExitStack() as locks:
        for path in sorted(paths):
            locks.enter_context(exclusive_lock(path.with_name(path.name + ".lock")))
        for seed, path, member_dir in zip(seeds, paths, dirs):
            if path.exists() and not cfg.overwrite:
                log.info("teacher %s exists; keeping it (overwrite=true retrains)", path)
                payload = models.load_checkpoint(path)
                rows[seed] = tables.write_metrics(member_dir, {**payload["metrics"],
                                                               "status": "exists"})
        todo = [k for k, seed in enumerate(seeds) if seed not in rows]
        if todo:
            trained = _train(cfg, table, [seeds[k] for k in todo], [paths[k] for k in todo],
                             [dirs[k] for k in todo], device)
            rows.update(zip((seeds[k] for k in todo), trained))
    frame = pd.concat([rows[s] for s in seeds], ignore_index=True)
    print(tables.show(frame, SUMMARY))
    return frame


def _train(cfg, table, seeds: list[int], paths: list[Path], dirs: list[Path],
           device: torch.device) -> list[pd.DataFrame]:
    splits = [split(table, cfg.dataset.n_train, cfg.dataset.val_fraction, s).to(device)
              for s in seeds]
    runtime.seed_everything(seeds[0])
    started = time.perf_counter()
    model, history, best_epoch = fit(cfg, splits, seeds, device)
    wall = time.perf_counter() - started
    x_test = torch.stack([s.x_test for s in splits])
    test_pred = evaluation.predict(model, x_test)
    frames = []
    for k, (seed, part, path, member_dir) in enumerate(zip(seeds, splits, paths, dirs)):
        row = {"command": "train-teacher", "dataset": part.name, "seed": seed,
               "teacher_hidden": models.arch_name(list(cfg.teacher.hidden),
                                                  cfg.teacher.activation),
               "n_train": len(part.x_train), "n_val": len(part.x_val),
               "n_test": len(part.x_test), "best_epoch": best_epoch[k],
               "epochs_run": history[k][-1]["epoch"] + 1,
               "teacher_rmse": evaluation.rmse(test_pred[k], part.y_test),
               "teacher_r2": evaluation.r2(test_pred[k], part.y_test),
               "teacher_rmse_original": evaluation.rmse(test_pred[k], part.y_test) * part.y_std,
               "wall_s": wall, "members": len(seeds), "device": str(device), "status": "ok",
               "teacher_path": str(path)}
        models.save_checkpoint(
            path, model.member_state_dict(k),
            arch={"input_dim": part.input_dim, "hidden": list(cfg.teacher.hidden),
                  "activation": cfg.teacher.activation, "output_dim": 1},
            input_spec={"features": list(part.features),
                        "low": part.x_train.min(0).values.cpu(),
                        "high": part.x_train.max(0).values.cpu()},
            scaler={"x_mean": part.x_mean.cpu(), "x_std": part.x_std.cpu(),
                    "y_mean": part.y_mean, "y_std": part.y_std},
            dataset=part.name, seed=seed, metrics=row)
        tables.write_history(member_dir, history[k])
        log.info("teacher written to %s", path)
        frames.append(tables.write_metrics(member_dir, row))
    return frames
