"""Loading any teacher for distillation: the store's teachers of a population (a dfkd checkpoint
or a stored scikit-learn ONNX file per seed), or a file the user names (TorchScript,
torch.export, ONNX, a dfkd checkpoint), as one population of frozen teachers in standardised
units, checked against the run's data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfkd_cli.data import domains, priors
from dfkd_cli.data.datasets import Box, Scaler, Split, Table, split_for
from dfkd_cli.data.images import ImageView, image_view
from dfkd_cli.errors import UserError, reason
from dfkd_cli.nets import architecture, factory, mlp, population
from dfkd_cli.teachers import onnx_population
from dfkd_cli.teachers import scikit_learn as sklearn_teacher
from dfkd_cli.teachers import spec as teacher_spec
from dfkd_cli.teachers import store as teacher_store
from dfkd_cli.teachers.model_files import KINDS, load_model_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherSource:
    """Where a run's teachers come from and how they run: the `teacher` config (a store teacher
    per seed, or the file `teacher.path` names, with its spec), the store, the network path
    (`fast_path`) and a `domain_spec` file overriding the stored input domain."""

    teacher: Any
    store: teacher_store.TeacherStore
    fast_path: str = "auto"
    domain_spec: str | None = None


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
    arch: dict[str, Any] | None = None  # a dfkd teacher's architecture (architecture.describe)
    input_shape: list[int] | None = None  # the shape of a row, when its checkpoint records one
    # per member, the input domain in raw units (dfkd_cli/data/domains.py); all continuous and
    # unbounded for a checkpoint written before domains existed
    domains: list[domains.Domain] = field(default_factory=list)

    def input_scales(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's (K, d) input means and standard deviations (raw = mean + sd * x)."""
        return tuple(torch.stack([getattr(s, k) for s in self.scalers]).to(device)
                     for k in ("x_mean", "x_std"))

    def images(self, shape: list[int] | None, device: torch.device) -> ImageView | None:
        """The rows as pictures (data/images.py) when they are image-shaped: `shape` (the
        run's dataset.input_shape) or else the checkpoint's; None for other rows."""
        return image_view(shape or self.input_shape, *self.input_scales(device))

    def prior(self, name: str, rng, remedy: str = "") -> priors.Prior:
        """prior=<name> over this teacher's standardised inputs, drawing from `rng`."""
        means, sds = self.input_scales(rng.device)
        return priors.Prior(name, rng, self.input_dim, self.domains, means, sds,
                            f"teacher {self.sources[0]}", remedy)


class RawUnitsTeacher(population.AutogradBackward, nn.Module):
    """A network of raw features -> raw targets (a TorchScript, torch.export or ONNX file) as a
    teacher: applied to every member of a population, (K, n, d) -> (K, n, k) in standardised
    units, T(z) = (net(mean + sd * z) - y_mean) / y_sd.

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

    def train(self, mode: bool = True) -> "RawUnitsTeacher":
        """The foreign network keeps the mode it was saved in (a torch.export program has no
        train / eval switch)."""
        self.training = mode
        return self


class PerMember(nn.Module):
    """Each member's own network from elsewhere (a stored teacher per seed), (K, n, d) ->
    (K, n, k): member k's rows go through nets[k] only."""

    def __init__(self, nets: list[RawUnitsTeacher]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(x[k:k + 1]) for k, net in enumerate(self.nets)])


def _dfkd_teachers(source: TeacherSource, seeds: list[int]) -> Teacher:
    """Checkpoints written by train-teacher: one per seed from the store, or teacher.path."""
    spec, members, store = source.teacher, len(seeds), source.store
    if spec.path:
        payloads = [store.read(Path(spec.path), None)] * members
        sources = [spec.path] * members
    else:
        paths = [store.path(seed) for seed in seeds]
        payloads = [store.read(path, seed) for path, seed in zip(paths, seeds)]
        sources = [str(p) for p in paths]
    archs = {json.dumps({"name": "mlp", **p["arch"]}, sort_keys=True) for p in payloads}
    if len(archs) > 1:
        raise UserError(f"teachers {sources} differ in architecture: {sorted(archs)}")
    arch = architecture.checkpoint_arch(payloads[0]["arch"], teacher_store.named_target(spec),
                                "teacher=custom teacher.net._target_",
                                f"teacher checkpoint {sources[0]}")
    module = factory.from_states(arch, [p["state_dict"] for p in payloads], source.fast_path)
    if architecture.uses_fast_path(arch, source.fast_path) and arch["activation"] == "tanh":
        module = mlp.sigmoid_form(module)  # the same function, cheaper to evaluate
    box = (torch.stack([p["input_spec"]["low"] for p in payloads]),
           torch.stack([p["input_spec"]["high"] for p in payloads]))
    if any("domain" not in p["input_spec"] for p in payloads):
        log.info("teacher %s carries no input domain (an older checkpoint): all features are "
                 "taken as continuous", sources[0])
    domain = [domains.Domain.from_payload(p["input_spec"]["domain"], f"teacher {source}")
              .check(p["input_spec"].get("features") or [], f"teacher {source}")
              if "domain" in p["input_spec"] else domains.Domain.continuous(arch["input_dim"])
              for p, source in zip(payloads, sources)]
    return Teacher(module, arch["input_dim"], box, sources, arch.get("output_dim", 1),
                   [Scaler.from_payload(p["scaler"]) for p in payloads], spec.differentiable,
                   payloads[0]["input_spec"].get("features"), payloads[0].get("targets"),
                   [_recorded(p) for p in payloads], arch,
                   payloads[0]["input_spec"].get("input_shape"), domain)


def _recorded(payload: dict[str, Any]) -> dict[str, Any]:
    """What a dfkd teacher checkpoint says about its training data; None where it is silent."""
    features = payload["input_spec"].get("features")
    return {"dataset": payload.get("dataset"), "seed": payload.get("seed"),
            "features": None if features is None else list(features),
            "targets": None if payload.get("targets") is None else list(payload["targets"]),
            "split": teacher_store.split_size(payload.get("metrics"))}


def _store_onnx_teachers(source: TeacherSource, seeds: list[int]) -> Teacher:
    """Stored scikit-learn teachers (sklearn_teacher.py): per seed an ONNX file of raw features
    and the spec of its training rows, run by onnxruntime as any ONNX teacher; the members' files
    merged into one session (onnx_population.py) unless fast_path=off or they cannot be."""
    nets, scalers, boxes, sizes, paths, found = [], [], [], [], [], []
    for seed in seeds:
        path = source.store.path(seed)
        if not path.is_file():
            raise UserError(f"no teacher at {path}; train it first with: "
                            f"{teacher_store.train_command(source.store, seed)}")
        file = load_model_file(path, ("onnx",))
        spec = teacher_spec.from_file(path.with_name(sklearn_teacher.SPEC))
        scaler = Scaler(*teacher_spec.input_scaler(spec, spec.input_dim()),
                        *teacher_spec.output_scaler(spec, file.module, None, None))
        nets.append(RawUnitsTeacher(file.module, scaler))
        scalers.append(scaler)
        boxes.append(teacher_spec.box(spec, scaler))
        sizes.append(teacher_store.split_size(sklearn_teacher.stored_row(path)))
        paths.append(str(path))
        found.append(teacher_spec.domain(spec, spec.input_dim(),  # its own, not the last one
                                         str(path.with_name(sklearn_teacher.SPEC))))
    box = (torch.stack([b[0] for b in boxes]), torch.stack([b[1] for b in boxes]))
    merged = (onnx_population.load([Path(p) for p in paths], scalers)
              if source.fast_path == "auto" else None)
    module = merged if merged is not None else nets[0] if len(nets) == 1 else PerMember(nets)
    return Teacher(module, spec.input_dim(), box, paths,
                   len(spec.targets), scalers, False, spec.features, spec.targets,
                   [{"split": size} for size in sizes],
                   domains=found)


def _data_mismatch(recorded: dict[str, Any], seed: int, table: Table) -> list[str]:
    """What differs between the data a teacher checkpoint records and this member's."""
    ours = {"dataset": table.name, "seed": seed, "features": list(table.features),
            "targets": list(table.targets)}
    return [f"{key} {recorded[key]!r} (this run: {ours[key]!r})" for key in ours
            if recorded.get(key) is not None and recorded[key] != ours[key]]


def member_splits(source: TeacherSource, teacher: Teacher, table: Table, seeds: list[int],
                  device: torch.device) -> list[Split]:
    """Each member's split of `table` (its seed, the dataset's split settings) in its teacher's
    units. A dfkd teacher whose checkpoint records other data (dataset, seed, features, targets)
    or another split is refused, unless teacher.allow_mismatch=true: it may have seen this run's
    test rows, or learned another data set."""
    dataset = source.store.dataset
    parts = [split_for(dataset, table, s, scaler).to(device)
             for s, scaler in zip(seeds, teacher.scalers)]
    if source.teacher.allow_mismatch:
        return parts
    for where, recorded, part, seed in zip(teacher.sources, teacher.recorded or [], parts,
                                           seeds):
        differs = _data_mismatch(recorded, seed, table)
        if differs:
            raise UserError(f"teacher {where} was trained on other data: {'; '.join(differs)}; "
                            "its test rows may be the teacher's training rows, or it learned "
                            "another data set. Use the teacher of this dataset and seed, or "
                            "teacher.allow_mismatch=true to use it anyway")
        why = teacher_store.split_mismatch(dataset, where, recorded["split"], part)
        if why:
            raise UserError(f"{why}; use the split settings the teacher was trained with, or "
                            "train teachers for these settings into another store "
                            "(teacher_store=<dir>), or teacher.allow_mismatch=true")
    return parts


def _foreign_teacher(source: TeacherSource, members: int) -> Teacher:
    """A TorchScript, torch.export or ONNX file taking raw features, with the user's spec."""
    tcfg = source.teacher
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
                            f"{reason(exc)}") from exc
    if spec.output_dim() not in (None, output_dim):
        raise UserError(f"teacher {tcfg.path} has {output_dim} outputs but its spec names "
                        f"{spec.output_dim()}")
    scaler = Scaler(x_mean, x_sd, *teacher_spec.output_scaler(spec, file.module, x_mean, x_sd))
    box = teacher_spec.box(spec, scaler)
    if box is not None:
        box = (box[0].expand(members, -1), box[1].expand(members, -1))
    domain = teacher_spec.domain(spec, dim, f"teacher spec {tcfg.spec or tcfg.path}")
    return Teacher(RawUnitsTeacher(file.module, scaler), dim, box, [tcfg.path] * members,
                   output_dim, [scaler] * members, file.differentiable and tcfg.differentiable,
                   spec.features, spec.targets, domains=[domain] * members)


def feature_names(features: list[str] | None, dim: int) -> list[str]:
    return list(features) if features else [f"x{i + 1}" for i in range(dim)]


def override_domains(domain_spec: str | None, found: list[domains.Domain], features: list[str]
                     ) -> list[domains.Domain]:
    """The domains with the file `domain_spec` applied (its domain keys replace what was
    inferred or stored for the features it names); logged."""
    if domain_spec:
        values = teacher_spec.domain_values(domain_spec)
        found = [domains.override(d, values, features, f"domain_spec={domain_spec}")
                 for d in found]
    log.info("input domain: %s", found[0].summary(features))
    return found


def load(source: TeacherSource, seeds: list[int], table: Table | None, device: torch.device
         ) -> Teacher:
    """The teacher `source` names for members `seeds`: one store teacher per seed, or the single
    file the user named, shared by every member; checked against the dataset's columns."""
    kind = {"dfkd": _dfkd_teachers, "sklearn": _store_onnx_teachers}.get(source.teacher.format)
    teacher = kind(source, seeds) if kind else _foreign_teacher(source, len(seeds))
    teacher.domains = override_domains(source.domain_spec, teacher.domains,
                                       feature_names(teacher.features, teacher.input_dim))
    if table is not None:
        if table.x.shape[1] != teacher.input_dim:
            raise UserError(f"teacher {teacher.sources[0]} takes {teacher.input_dim} inputs but "
                            f"dataset {source.store.dataset.name!r} has {table.x.shape[1]} "
                            "features")
        if table.y.shape[1] != teacher.output_dim:
            raise UserError(f"teacher {teacher.sources[0]} has {teacher.output_dim} outputs but "
                            f"dataset {source.store.dataset.name!r} has {table.y.shape[1]} target "
                            "columns "
                            f"{table.targets} (dataset.target=[...] picks them)")
    teacher.module = teacher.module.to(device).eval()
    teacher.module.requires_grad_(False)
    if teacher.box is not None:
        teacher.box = (teacher.box[0].to(device), teacher.box[1].to(device))
    return teacher
