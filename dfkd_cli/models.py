"""The MLP family, and checkpoints that hold weights and plain metadata only.

A checkpoint is a dict of tensors, numbers, strings and lists, written atomically with
torch.save and read back with `torch.load(weights_only=True)`, so loading never runs code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfkd_cli.errors import UserError
from dfkd_cli.files import atomic_path

FORMAT = "dfkd-checkpoint"
VERSION = 1

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
                "silu": nn.SiLU}


def mlp(input_dim: int, hidden: list[int], activation: str, output_dim: int = 1) -> nn.Sequential:
    """input_dim -> hidden[0] -> ... -> output_dim, `activation` after every hidden layer."""
    layers: list[nn.Module] = []
    width = input_dim
    for h in hidden:
        layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


def arch_name(hidden: list[int], activation: str) -> str:
    """A short name for an architecture, e.g. 'mlp500-tanh' (used as the teacher store key)."""
    return "mlp" + "x".join(str(h) for h in hidden) + f"-{activation}"


def save_checkpoint(path: str | Path, model: nn.Module, arch: dict[str, Any], **meta: Any) -> None:
    """Write weights + architecture + plain metadata (scalers, input spec, metrics) atomically."""
    payload = {"format": FORMAT, "version": VERSION, "arch": arch,
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               **meta}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a dfkd checkpoint with weights only; anything else is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is not a dfkd checkpoint that loads with weights "
                        f"only ({first})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a dfkd checkpoint (no format={FORMAT!r})")
    if payload.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has format version {payload.get('version')}; "
                        f"this dfkd reads version {VERSION}")
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> nn.Sequential:
    """Rebuild the MLP a checkpoint describes and load its weights."""
    arch = payload["arch"]
    model = mlp(arch["input_dim"], list(arch["hidden"]), arch["activation"],
                arch.get("output_dim", 1))
    model.load_state_dict(payload["state_dict"])
    return model
