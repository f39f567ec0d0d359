"""The teacher store: where the teacher for (dataset, architecture, seed) lives
(<teacher_store>/<dataset>/<architecture>/seed<N>/), reading a stored checkpoint, the
train-teacher command that writes a missing one, and whether a teacher was trained on the split
a run asks for."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from dfkd_cli.data.datasets import Split
from dfkd_cli.errors import UserError
from dfkd_cli.nets import architecture, checkpoints
from dfkd_cli.teachers import scikit_learn as sklearn_teacher

DEFAULT_STORE = "outputs/teachers"


def named_target(net_cfg) -> str | None:
    """The custom network class the user named for this config, if any."""
    return net_cfg.net.get(architecture.TARGET) if net_cfg.get("name") == "custom" else None


@dataclass(frozen=True)
class TeacherStore:
    """A run's view of the teacher store: its folder, the dataset and teacher configs that key
    it, and where the benchmark tables are (for the command that trains a missing teacher)."""

    root: str
    dataset: Any  # the run's `dataset` config
    teacher: Any  # the run's `teacher` config
    data_dir: str

    def path(self, seed: int) -> Path:
        """Where the teacher for (dataset, architecture, seed) lives."""
        file = sklearn_teacher.MODEL if self.teacher.format == "sklearn" else "teacher.pt"
        return (Path(self.root) / self.dataset.name / store_key(self.teacher) / f"seed{seed}"
                / file)

    def read(self, path: Path, seed: int | None) -> dict[str, Any]:
        """A stored (or named) dfkd teacher checkpoint; a missing one is a UserError that
        prints the command that trains it (for a store teacher, `seed`)."""
        return read(path, None if seed is None else train_command(self, seed))


# what a part of the store's key may be: a plain token, never a path ('..' or '/')
TOKEN = re.compile(r"[A-Za-z0-9_.+-]+")


def _token(text: str, key: str, value: Any) -> str:
    if not TOKEN.fullmatch(text) or ".." in text:
        raise UserError(f"{key}={value} cannot be part of the teacher store's key ({text!r}): "
                        "expected a plain token (letters, digits, _ . + -, no '..' or '/')")
    return text


def store_key(tcfg) -> str:
    """The architecture folder of the teacher store (`arch_label`, a custom class with its
    module path), built from checked tokens: every keyword value that goes into it must be a
    plain token, else a UserError naming the key, so no value leads out of the store."""
    if tcfg.format == "sklearn":
        for k, text, v in sklearn_teacher.estimator_args(tcfg):
            _token(f"{k}{text}", f"teacher.estimator.{k}", v)
    elif tcfg.format == "dfkd":
        arch = architecture.describe(tcfg, 0, 0)
        if arch["name"] == "custom":
            _token(str(arch["target"]), "teacher.net._target_", arch["target"])
        elif arch["name"] == "mlp":
            _token(str(arch["activation"]), "teacher.activation", arch["activation"])
        for k, text in architecture.kwarg_parts(arch):
            _token(f"{k}{text}", f"teacher.net.{k}", arch["kwargs"][k])
    label = arch_label(tcfg, qualified=True)
    return _token(label, "teacher", label)


def _override(key: str, value: Any) -> str:
    """key=value as a command-line override (lists as [a,b]), quoted for a POSIX shell."""
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        value = "[" + ",".join(str(v) for v in value) + "]"
    return shlex.quote(f"{key}={value}")


def train_command(store: TeacherStore, seed: int) -> str:
    """The train-teacher command that writes the teacher `store` looks for: the dataset (a CSV
    by its path, name, target and drop keys), its split settings, the architecture and the
    store, whatever differs from the defaults."""
    # the schemas' defaults, from the config nodes' own types (dfkd_cli/config.py)
    ds, teacher = store.dataset, store.teacher
    default, teacher_default = OmegaConf.get_type(ds)(), OmegaConf.get_type(teacher)()
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
            keys["data_dir"] = store.data_dir
        keys |= {f"dataset.{k}": ds[k] for k in ("n_rows", "noise") if ds.source == "builtin"
                 and ds[k] != getattr(default, k)}
    keys |= {f"dataset.{k}": ds[k] for k in ("n_train", "val_fraction")
             if ds[k] != getattr(default, k)}
    keys["seed"] = seed
    if teacher.format == "sklearn":
        keys |= {"teacher": "sklearn",
                 "teacher.estimator._target_": teacher.estimator._target_}
    elif teacher.name == "mlp":
        keys |= {f"teacher.{k}": teacher[k] for k in ("hidden", "activation")
                 if teacher[k] != getattr(teacher_default, k)}
    else:  # a built-in network's keys are in its YAML; a custom one's are added with +
        keys["teacher"] = teacher.name
        custom = named_target(teacher)
        if custom:
            keys["teacher.net._target_"] = custom
        keys |= {f"{'+' if custom else ''}teacher.net.{k}": v
                 for k, v in teacher.net.items() if k != architecture.TARGET}
    if ds.source not in ("builtin", "csv") and "data_dir" not in keys:
        keys["data_dir"] = store.data_dir
    if store.root != DEFAULT_STORE:
        keys["teacher_store"] = store.root
    return "dfkd train-teacher " + " ".join(_override(k, v) for k, v in keys.items())


def read(path: Path, command: str | None = None) -> dict[str, Any]:
    """A dfkd teacher checkpoint (weights only, its input spec checked); a missing one is a
    UserError that prints `command`, the one that trains it, when there is one."""
    if not path.is_file():
        hint = "" if command is None else f"; train it first with: {command}"
        raise UserError(f"no teacher checkpoint at {path}{hint}")
    payload = checkpoints.load_checkpoint(path)
    spec, d = payload.get("input_spec"), payload["arch"]["input_dim"]
    if not (isinstance(spec, dict) and all(
            torch.is_tensor(spec.get(k)) and tuple(spec[k].shape) == (d,) for k in ("low", "high"))):
        raise UserError(f"checkpoint {path} is not a teacher checkpoint: it lacks an input_spec "
                        f"with low / high of {d} features (dfkd train-teacher writes them)")
    return payload


def split_size(row: Any) -> tuple[int, int] | None:
    """The (training, validation) row counts a teacher was trained on, from its metrics row."""
    if not isinstance(row, dict) or "n_train" not in row:
        return None
    return int(row["n_train"]), int(row["n_val"])


def split_mismatch(dataset, source: str, trained: tuple[int, int] | None, part: Split
                   ) -> str | None:
    """Why teacher `source` does not belong to split `part` of the `dataset` config, or None
    when it does."""
    ours = (len(part.x_train), len(part.x_val))
    if trained is None or tuple(trained) == ours:
        return None
    return (f"teacher {source} was trained on {trained[0]} training and {trained[1]} validation "
            f"rows of {part.name}, but dataset.n_train={dataset.n_train} and "
            f"dataset.val_fraction={dataset.val_fraction} split it into {ours[0]} and "
            f"{ours[1]}, so this run's test rows would not be the teacher's held-out rows")


def arch_label(tcfg, qualified: bool = True) -> str:
    """The teacher's architecture in the store and the tables: a dfkd network's name
    ('mlp500-tanh', 'rbf-units50', 'my_nets.Wide-width16': architecture.arch_name, a custom class with
    its module), a scikit-learn estimator's name ('svr'), or the format of a file the user
    names."""
    if tcfg.format == "sklearn":
        return sklearn_teacher.estimator_name(tcfg)
    if tcfg.format == "dfkd":
        return architecture.config_arch_name(tcfg, qualified)
    return tcfg.format
