"""`dfkd train-teacher`, the teacher store, and loading a teacher for distillation.

Training follows the paper's settings (Zhou & Chiam 2023, Sec. 4.1): MLP with 500 tanh units,
RMSprop lr 1e-3, weight decay 1e-5, batch 16, up to 500 epochs, ReduceLROnPlateau(factor 0.5),
early stopping on validation loss (patience 50), best validation epoch kept.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfkd_cli import evaluation, models, runtime, tables
from dfkd_cli.data import Split, load_split
from dfkd_cli.errors import UserError
from dfkd_cli.optim import make_optimizer
from dfkd_cli.strategies.base import Box

log = logging.getLogger(__name__)


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


def fit(cfg, split: Split, device: torch.device) -> tuple[nn.Module, list[dict[str, Any]], int]:
    """Mini-batch training with plateau LR decay and early stopping; returns the best model."""
    model = models.mlp(split.input_dim, list(cfg.teacher.hidden), cfg.teacher.activation).to(device)
    opt = make_optimizer(cfg.optimizer, model.parameters())
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor)
    x, y = split.x_train, split.y_train
    best_loss, best_state, best_epoch, waited = float("inf"), None, 0, 0
    history = []
    for epoch in runtime.progress(range(cfg.epochs), cfg.progress, desc="teacher"):
        model.train()
        order = torch.randperm(len(x), device=device)
        total = torch.zeros((), device=device)
        for i in range(0, len(x), cfg.batch_size):
            rows = order[i:i + cfg.batch_size]
            loss = (model(x[rows]) - y[rows]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(rows)
        val_loss = float((evaluation.predict(model, split.x_val) - split.y_val).pow(2).mean())
        plateau.step(val_loss)
        if val_loss < best_loss:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        if epoch % cfg.log_every == 0 or waited >= cfg.patience:
            history.append({"epoch": epoch, "train_mse": float(total) / len(x),
                            "val_mse": val_loss, "lr": opt.param_groups[0]["lr"]})
        if waited >= cfg.patience:
            log.info("early stop at epoch %d (best epoch %d)", epoch, best_epoch)
            break
    model.load_state_dict(best_state)
    return model.eval(), history, best_epoch


def run(cfg, run_dir: Path) -> Any:
    """`dfkd train-teacher`: train the teacher for (dataset, seed) into the teacher store."""
    device = runtime.resolve_device(cfg.device)
    split = load_split(cfg).to(device)
    path = store_path(cfg, cfg.seed)
    if path.exists() and not cfg.overwrite:
        log.info("teacher %s exists; keeping it (overwrite=true retrains)", path)
        payload = models.load_checkpoint(path)
        return tables.write_metrics(run_dir, {**payload["metrics"], "status": "exists"})
    runtime.seed_everything(cfg.seed)
    started = time.perf_counter()
    model, history, best_epoch = fit(cfg, split, device)
    test_pred = evaluation.predict(model, split.x_test)
    row = {"command": "train-teacher", "dataset": split.name, "seed": cfg.seed,
           "teacher_hidden": models.arch_name(list(cfg.teacher.hidden), cfg.teacher.activation),
           "n_train": len(split.x_train), "n_val": len(split.x_val), "n_test": len(split.x_test),
           "best_epoch": best_epoch, "epochs_run": history[-1]["epoch"] + 1,
           "teacher_rmse": evaluation.rmse(test_pred, split.y_test),
           "teacher_r2": evaluation.r2(test_pred, split.y_test),
           "teacher_rmse_original": evaluation.rmse(test_pred, split.y_test) * split.y_std,
           "wall_s": time.perf_counter() - started, "device": str(device), "status": "ok",
           "teacher_path": str(path)}
    x_train = split.x_train
    models.save_checkpoint(
        path, model.state_dict(),
        arch={"input_dim": split.input_dim, "hidden": list(cfg.teacher.hidden),
              "activation": cfg.teacher.activation, "output_dim": 1},
        input_spec={"features": list(split.features), "low": x_train.min(0).values.cpu(),
                    "high": x_train.max(0).values.cpu()},
        scaler={"x_mean": split.x_mean.cpu(), "x_std": split.x_std.cpu(),
                "y_mean": split.y_mean, "y_std": split.y_std},
        dataset=split.name, seed=cfg.seed, metrics=row)
    tables.write_history(run_dir, history)
    log.info("teacher written to %s", path)
    return tables.write_metrics(run_dir, row)
