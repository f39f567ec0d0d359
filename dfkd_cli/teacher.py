"""`dfkd train-teacher`, the teacher store, and loading a teacher for distillation.

Training follows the paper's settings (Zhou & Chiam 2023, Sec. 4.1): MLP with 500 tanh units,
RMSprop lr 1e-3, weight decay 1e-5, batch 16, up to 500 epochs, ReduceLROnPlateau(factor 0.5),
early stopping on validation loss (patience 50), best validation epoch kept.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn

from dfkd_cli import metrics, models, networks, runtime, sklearn_teacher, tables, teacher_spec
from dfkd_cli.config import DatasetConfig, TeacherConfig
from dfkd_cli.data import Box, Scaler, Split, Table, load_table, split_for
from dfkd_cli.errors import UserError
from dfkd_cli.files import exclusive_lock
from dfkd_cli.labels import arch_label
from dfkd_cli.model_files import KINDS, load_model_file
from dfkd_cli.optim import make_optimizer
from dfkd_cli.rng import Streams, member_seeds

log = logging.getLogger(__name__)

DEFAULT_STORE = "outputs/teachers"
SUMMARY = ["dataset", "seed", "teacher_hidden", "best_epoch", "teacher_rmse", "teacher_r2",
           "wall_s", "status"]


@dataclass
class Teacher:
    """Frozen teachers for a population (one per member, or one shared), in standardised units."""

    module: nn.Module  # (K, n, d) -> (K, n, k), standardised inputs and outputs
    input_dim: int
    box: Box | None  # per-member, per-feature min / max of the training rows, standardised
    sources: list[str]
    output_dim: int = 1
    scalers: list[Scaler] = field(default_factory=list)  # per member: raw <-> standardised
    differentiable: bool = True  # False: strategies that need dT/dx refuse it
    features: list[str] | None = None
    targets: list[str] | None = None
    # per member, what a dfkd teacher's checkpoint records of the data it was trained on
    # (dataset, seed, features, targets, split); None for a foreign teacher
    recorded: list[dict[str, Any]] | None = None
    arch: dict[str, Any] | None = None  # a dfkd teacher's architecture (networks.describe)
    input_shape: list[int] | None = None  # the shape of a row, when its checkpoint records one


class Shared(networks.AutogradBackward, nn.Module):
    """A network from elsewhere, applied to every member of a population: (K, n, d) -> (K, n, k)
    in standardised units, T(z) = (net(mean + sd * z) - y_mean) / y_sd.

    Offers the network seam's `trace` / `input_grad` through autograd, so strategies that need
    dL/dx treat a foreign (e.g. TorchScript) teacher like a dfkd one."""

    def __init__(self, net: nn.Module, scaler: Scaler):
        super().__init__()
        self.net = net
        for name, value in scaler.__dict__.items():
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, n, d = x.shape
        raw = self.net((x * self.x_std + self.x_mean).reshape(members * n, d))
        return ((raw - self.y_mean) / self.y_std).reshape(members, n, -1)

    def train(self, mode: bool = True) -> "Shared":
        """The foreign network keeps the mode it was saved in (a torch.export program has no
        train / eval switch)."""
        self.training = mode
        return self


def named_target(net_cfg) -> str | None:
    """The custom network class the user named for this config, if any."""
    return net_cfg.net.get(networks.TARGET) if net_cfg.get("name") == "custom" else None


class PerMember(nn.Module):
    """Each member's own network from elsewhere (a stored teacher per seed), (K, n, d) ->
    (K, n, k): member k's rows go through nets[k] only."""

    def __init__(self, nets: list[Shared]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(x[k:k + 1]) for k, net in enumerate(self.nets)])


def store_path(cfg, seed: int) -> Path:
    """Where the teacher for (dataset, architecture, seed) lives in the teacher store."""
    file = sklearn_teacher.MODEL if cfg.teacher.format == "sklearn" else "teacher.pt"
    return (Path(cfg.teacher_store) / cfg.dataset.name / arch_label(cfg.teacher) / f"seed{seed}"
            / file)


def _override(key: str, value: Any) -> str:
    """key=value as a command-line override (lists as [a,b]), quoted for a POSIX shell."""
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        value = "[" + ",".join(str(v) for v in value) + "]"
    return shlex.quote(f"{key}={value}")


def _train_command(cfg, seed: int) -> str:
    """The train-teacher command that writes the teacher this run looks for: the dataset (a CSV
    by its path, name, target and drop keys), its split settings, the architecture and the
    store, whatever differs from the defaults."""
    ds, default = cfg.dataset, DatasetConfig()
    keys: dict[str, Any] = {}
    if ds.source == "csv":
        keys = {"dataset": "csv", "dataset.path": ds.path, "dataset.name": ds.name}
        keys |= {f"dataset.{k}": ds[k] for k in ("target", "drop", "nonfinite")
                 if ds[k] != getattr(default, k) and ds[k]}
    else:
        keys = {"dataset": "friedman" if ds.source == "builtin" else ds.name}
        if ds.source == "builtin" and ds.name != "friedman":
            keys["dataset.name"] = ds.name
        if ds.source == "benchmark":
            keys["data_dir"] = cfg.data_dir
        keys |= {f"dataset.{k}": ds[k] for k in ("n_rows", "noise") if ds.source == "builtin"
                 and ds[k] != getattr(default, k)}
    keys |= {f"dataset.{k}": ds[k] for k in ("n_train", "val_fraction")
             if ds[k] != getattr(default, k)}
    keys["seed"] = seed
    if cfg.teacher.format == "sklearn":
        keys |= {"teacher": "sklearn",
                 "teacher.estimator._target_": cfg.teacher.estimator._target_}
    elif cfg.teacher.name == "mlp":
        keys |= {f"teacher.{k}": cfg.teacher[k] for k in ("hidden", "activation")
                 if cfg.teacher[k] != getattr(TeacherConfig(), k)}
    else:  # a built-in network's keys are in its YAML; a custom one's are added with +
        keys["teacher"] = cfg.teacher.name
        custom = named_target(cfg.teacher)
        if custom:
            keys["teacher.net._target_"] = custom
        keys |= {f"{'+' if custom else ''}teacher.net.{k}": v
                 for k, v in cfg.teacher.net.items() if k != networks.TARGET}
    if ds.source not in ("builtin", "csv") and "data_dir" not in keys:
        keys["data_dir"] = cfg.data_dir
    if cfg.teacher_store != DEFAULT_STORE:
        keys["teacher_store"] = cfg.teacher_store
    return "dfkd train-teacher " + " ".join(_override(k, v) for k, v in keys.items())


def _read(cfg, path: Path, seed: int | None) -> dict[str, Any]:
    if not path.is_file():
        hint = "" if seed is None else f"; train it first with: {_train_command(cfg, seed)}"
        raise UserError(f"no teacher checkpoint at {path}{hint}")
    payload = models.load_checkpoint(path)
    spec, d = payload.get("input_spec"), payload["arch"]["input_dim"]
    if not (isinstance(spec, dict) and all(
            torch.is_tensor(spec.get(k)) and tuple(spec[k].shape) == (d,) for k in ("low", "high"))):
        raise UserError(f"checkpoint {path} is not a teacher checkpoint: it lacks an input_spec "
                        f"with low / high of {d} features (dfkd train-teacher writes them)")
    return payload


def _dfkd_teachers(cfg, seeds: list[int]) -> Teacher:
    """Checkpoints written by train-teacher: one per seed from the store, or teacher.path."""
    spec, members = cfg.teacher, len(seeds)
    if spec.path:
        payloads = [_read(cfg, Path(spec.path), None)] * members
        sources = [spec.path] * members
    else:
        paths = [store_path(cfg, seed) for seed in seeds]
        payloads = [_read(cfg, path, seed) for path, seed in zip(paths, seeds)]
        sources = [str(p) for p in paths]
    archs = {json.dumps({"name": "mlp", **p["arch"]}, sort_keys=True) for p in payloads}
    if len(archs) > 1:
        raise UserError(f"teachers {sources} differ in architecture: {sorted(archs)}")
    arch = payloads[0]["arch"]
    networks.check_target(arch, named_target(spec), "teacher=custom teacher.net._target_",
                          f"teacher checkpoint {sources[0]}")
    module = networks.from_states(arch, [p["state_dict"] for p in payloads], cfg.fast_path)
    if networks.fast(arch, cfg.fast_path) and arch["activation"] == "tanh":
        module = models.sigmoid_form(module)  # the same function, cheaper to evaluate
    box = (torch.stack([p["input_spec"]["low"] for p in payloads]),
           torch.stack([p["input_spec"]["high"] for p in payloads]))
    return Teacher(module, arch["input_dim"], box, sources, arch.get("output_dim", 1),
                   [Scaler.from_payload(p["scaler"]) for p in payloads], spec.differentiable,
                   payloads[0]["input_spec"].get("features"), payloads[0].get("targets"),
                   [_recorded(p) for p in payloads], arch,
                   payloads[0]["input_spec"].get("input_shape"))


def _recorded(payload: dict[str, Any]) -> dict[str, Any]:
    """What a dfkd teacher checkpoint says about its training data; None where it is silent."""
    features = payload["input_spec"].get("features")
    return {"dataset": payload.get("dataset"), "seed": payload.get("seed"),
            "features": None if features is None else list(features),
            "targets": None if payload.get("targets") is None else list(payload["targets"]),
            "split": _split_size(payload.get("metrics"))}


def _store_onnx_teachers(cfg, seeds: list[int]) -> Teacher:
    """Stored scikit-learn teachers (sklearn_teacher.py): per seed an ONNX file of raw features
    and the spec of its training rows, run by onnxruntime as any ONNX teacher."""
    nets, scalers, boxes, sizes, paths = [], [], [], [], []
    for seed in seeds:
        path = store_path(cfg, seed)
        if not path.is_file():
            raise UserError(f"no teacher at {path}; train it first with: "
                            f"{_train_command(cfg, seed)}")
        file = load_model_file(path, ("onnx",))
        spec = teacher_spec.from_file(path.with_name(sklearn_teacher.SPEC))
        scaler = Scaler(*teacher_spec.input_scaler(spec, spec.input_dim()),
                        *teacher_spec.output_scaler(spec, file.module, None, None))
        nets.append(Shared(file.module, scaler))
        scalers.append(scaler)
        boxes.append(teacher_spec.box(spec, scaler))
        sizes.append(_split_size(sklearn_teacher.stored_row(path)))
        paths.append(str(path))
    box = (torch.stack([b[0] for b in boxes]), torch.stack([b[1] for b in boxes]))
    return Teacher(nets[0] if len(nets) == 1 else PerMember(nets), spec.input_dim(), box, paths,
                   len(spec.targets), scalers, False, spec.features, spec.targets,
                   [{"split": size} for size in sizes])


def _split_size(row: Any) -> tuple[int, int] | None:
    """The (training, validation) row counts a teacher was trained on, from its metrics row."""
    if not isinstance(row, dict) or "n_train" not in row:
        return None
    return int(row["n_train"]), int(row["n_val"])


def _split_mismatch(cfg, source: str, trained: tuple[int, int] | None, part: Split
                    ) -> str | None:
    """Why teacher `source` does not belong to split `part`, or None when it does."""
    ours = (len(part.x_train), len(part.x_val))
    if trained is None or tuple(trained) == ours:
        return None
    return (f"teacher {source} was trained on {trained[0]} training and {trained[1]} validation "
            f"rows of {part.name}, but dataset.n_train={cfg.dataset.n_train} and "
            f"dataset.val_fraction={cfg.dataset.val_fraction} split it into {ours[0]} and "
            f"{ours[1]}, so this run's test rows would not be the teacher's held-out rows")


def _data_mismatch(recorded: dict[str, Any], seed: int, table: Table) -> list[str]:
    """What differs between the data a teacher checkpoint records and this member's."""
    ours = {"dataset": table.name, "seed": seed, "features": list(table.features),
            "targets": list(table.targets)}
    return [f"{key} {recorded[key]!r} (this run: {ours[key]!r})" for key in ours
            if recorded.get(key) is not None and recorded[key] != ours[key]]


def member_splits(cfg, teacher: Teacher, table: Table, seeds: list[int],
                  device: torch.device) -> list[Split]:
    """Each member's split of `table` (its seed, the dataset's split settings) in its teacher's
    units. A dfkd teacher whose checkpoint records other data (dataset, seed, features, targets)
    or another split is refused, unless teacher.allow_mismatch=true: it may have seen this run's
    test rows, or learned another data set."""
    parts = [split_for(cfg, table, s, scaler).to(device)
             for s, scaler in zip(seeds, teacher.scalers)]
    if cfg.teacher.allow_mismatch:
        return parts
    for source, recorded, part, seed in zip(teacher.sources, teacher.recorded or [], parts,
                                            seeds):
        differs = _data_mismatch(recorded, seed, table)
        if differs:
            raise UserError(f"teacher {source} was trained on other data: {'; '.join(differs)}; "
                            "its test rows may be the teacher's training rows, or it learned "
                            "another data set. Use the teacher of this dataset and seed, or "
                            "teacher.allow_mismatch=true to use it anyway")
        why = _split_mismatch(cfg, source, recorded["split"], part)
        if why:
            raise UserError(f"{why}; use the split settings the teacher was trained with, or "
                            "train teachers for these settings into another store "
                            "(teacher_store=<dir>), or teacher.allow_mismatch=true")
    return parts


def _foreign_teacher(cfg, members: int) -> Teacher:
    """A TorchScript, torch.export or ONNX file taking raw features, with the user's spec."""
    tcfg = cfg.teacher
    if not tcfg.path:
        raise UserError(f"teacher.format={tcfg.format} needs teacher.path=<file>")
    # teacher=torchscript asks for TorchScript or torch.export by name; teacher=onnx for ONNX
    # only, so a torch.export archive (which can run code when loaded) is refused unopened
    file = (load_model_file(tcfg.path, ("onnx",), "use teacher=torchscript for it")
            if tcfg.format == "onnx" else load_model_file(tcfg.path, KINDS))
    spec = teacher_spec.read(tcfg)
    dims = {"teacher.input_dim": tcfg.input_dim, "the teacher spec": spec.input_dim(),
            f"the {file.kind} file": file.input_dim}
    known = {k: v for k, v in dims.items() if v is not None}
    if not known:
        raise UserError(f"the input dimension of {tcfg.path} is unknown: set "
                        "teacher.input_dim=<d> or give the spec's mean/sd/low/high/features")
    if len(set(known.values())) > 1:
        raise UserError(f"input dimensions disagree: {known}")
    dim = next(iter(known.values()))
    x_mean, x_sd = teacher_spec.input_scaler(spec, dim)
    with torch.no_grad():
        try:
            output_dim = file.module(x_mean.unsqueeze(0)).shape[-1]
        except Exception as exc:  # whatever the foreign model raises on a wrong input shape
            raise UserError(f"teacher {tcfg.path} failed on one row of {dim} features: "
                            f"{str(exc).splitlines()[0]}") from exc
    if spec.output_dim() not in (None, output_dim):
        raise UserError(f"teacher {tcfg.path} has {output_dim} outputs but its spec names "
                        f"{spec.output_dim()}")
    scaler = Scaler(x_mean, x_sd, *teacher_spec.output_scaler(spec, file.module, x_mean, x_sd))
    box = teacher_spec.box(spec, scaler)
    if box is not None:
        box = (box[0].expand(members, -1), box[1].expand(members, -1))
    return Teacher(Shared(file.module, scaler), dim, box, [tcfg.path] * members, output_dim,
                   [scaler] * members, file.differentiable and tcfg.differentiable,
                   spec.features, spec.targets)


def load(cfg, seeds: list[int], table: Table | None, device: torch.device) -> Teacher:
    """The configured teacher for members `seeds`: one store teacher per seed, or the single
    file the user named, shared by every member; checked against the dataset's columns."""
    loader = {"dfkd": _dfkd_teachers, "sklearn": _store_onnx_teachers}.get(cfg.teacher.format)
    teacher = loader(cfg, seeds) if loader else _foreign_teacher(cfg, len(seeds))
    if table is not None:
        if table.x.shape[1] != teacher.input_dim:
            raise UserError(f"teacher {teacher.sources[0]} takes {teacher.input_dim} inputs but "
                            f"dataset {cfg.dataset.name!r} has {table.x.shape[1]} features")
        if table.y.shape[1] != teacher.output_dim:
            raise UserError(f"teacher {teacher.sources[0]} has {teacher.output_dim} outputs but "
                            f"dataset {cfg.dataset.name!r} has {table.y.shape[1]} target columns "
                            f"{table.targets} (dataset.target=[...] picks them)")
    teacher.module = teacher.module.to(device).eval()
    teacher.module.requires_grad_(False)
    if teacher.box is not None:
        teacher.box = (teacher.box[0].to(device), teacher.box[1].to(device))
    return teacher


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
                p.copy_(torch.lerp(old, p, models.per_member(scale, p)))
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
    arch = networks.describe(cfg.teacher, splits[0].input_dim, len(splits[0].targets),
                             cfg.dataset.input_shape)
    model = networks.build(arch, rng, cfg.fast_path)
    opt = make_optimizer(cfg.optimizer, model.opt_params,
                         fast=isinstance(model, models.StackedMLP))
    best = models.Snapshot(model.params)
    x, y = (torch.stack([getattr(s, k) for s in splits]) for k in ("x_train", "y_train"))
    x_val, y_val = (torch.stack([getattr(s, k) for s in splits]) for k in ("x_val", "y_val"))
    rows = torch.arange(members, device=device).unsqueeze(1)
    plateaus = [Plateau(cfg.lr_factor) for _ in seeds]
    lr_scale = [1.0] * members
    best_loss, best_epoch, waited = [float("inf")] * members, [0] * members, [0] * members
    history: list[list[dict[str, Any]]] = [[] for _ in seeds]
    for epoch in runtime.progress(range(cfg.epochs), cfg.progress, desc="teacher"):
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
        if all(w >= cfg.patience for w in waited):
            break
    best.restore(torch.ones(members, dtype=torch.bool, device=device))
    return model.eval(), arch, history, best_epoch


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
                stored = (sklearn_teacher.stored_row(path) if cfg.teacher.format == "sklearn"
                          else _read(cfg, path, seed).get("metrics") or {})
                why = _split_mismatch(cfg, str(path), _split_size(stored),
                                      split_for(cfg, table, seed))
                if why:
                    raise UserError(f"{why}; overwrite=true retrains it, or teacher_store=<dir> "
                                    "keeps teachers for these settings apart")
                rows[seed] = tables.write_metrics(member_dir, {**stored, "status": "exists"})
        todo = [k for k, seed in enumerate(seeds) if seed not in rows]
        if todo:
            todo_seeds, todo_paths, todo_dirs = ([v[k] for k in todo] for v in (seeds, paths, dirs))
            trained = (sklearn_teacher.train(cfg, table, todo_seeds, todo_paths, todo_dirs,
                                             arch_label(cfg.teacher))
                       if cfg.teacher.format == "sklearn" else
                       _train(cfg, table, todo_seeds, todo_paths, todo_dirs, device))
            rows.update(zip((seeds[k] for k in todo), trained))
    frame = pd.concat([rows[s] for s in seeds], ignore_index=True)
    print(tables.show(frame, SUMMARY))
    return frame


def _train(cfg, table, seeds: list[int], paths: list[Path], dirs: list[Path],
           device: torch.device) -> list[pd.DataFrame]:
    splits = [split_for(cfg, table, s).to(device) for s in seeds]
    runtime.seed_everything(seeds[0])
    started = time.perf_counter()
    model, arch, history, best_epoch = fit(cfg, splits, seeds, device)
    wall = time.perf_counter() - started
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
        models.save_checkpoint(
            path, model.member_state_dict(k),
            arch=arch,
            input_spec={"features": list(part.features),
                        "input_shape": networks.plain(cfg.dataset.input_shape),
                        "low": part.x_train.min(0).values.cpu(),
                        "high": part.x_train.max(0).values.cpu()},
            scaler=part.scaler.payload(), targets=list(part.targets), dataset=part.name,
            seed=seed, metrics=row, config=OmegaConf.to_yaml(cfg))
        tables.write_history(member_dir, history[k])
        log.info("teacher written to %s", path)
        frames.append(tables.write_metrics(member_dir, row))
    return frames
