"""Checkpoint files: weights and plain metadata only.

A checkpoint is a dict of tensors, numbers, strings and lists, written atomically with
torch.save and read back with `torch.load(weights_only=True)`, so loading never runs code; its
architecture is read by `architecture.read_arch` (a known name, plain keyword arguments, no `_target_`),
so building its network never runs code the file names either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dfkd_cli.errors import UserError, reason
from dfkd_cli.nets import architecture
from dfkd_cli.nets.mlp import mlp
from dfkd_cli.utils.files import atomic_path

FORMAT = "dfkd-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], arch: dict[str, Any],
                    **meta: Any) -> None:
    """Write weights (an `mlp` state dict) + architecture + plain metadata (scalers, input spec,
    metrics) atomically."""
    payload = {"format": FORMAT, "version": VERSION, "arch": arch,
               "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
               **meta}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_weights_only(path: str | Path) -> Any:
    """torch.load with weights_only=True (tensors, numbers, strings, containers; never code).
    A file that is missing or needs more than that is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on a foreign file (KeyError: text)
        raise UserError(f"checkpoint {path} is not a file dfkd wrote, or is damaged: it does not "
                        f"load with weights only ({reason(exc)})") from exc


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a dfkd model checkpoint with weights only; check its format, version and weights."""
    payload = load_weights_only(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a dfkd checkpoint (no format={FORMAT!r})")
    if payload.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has format version {payload.get('version')}; "
                        f"this dfkd reads version {VERSION}")
    architecture.refuse_targets(payload.get("arch"), f"checkpoint {path}")
    try:
        _check_structure(payload)
    except Exception as exc:  # a missing key, a wrong type or shape, whatever it raises
        raise UserError(f"checkpoint {path} is incomplete or damaged (a dfkd checkpoint has "
                        f"arch, state_dict and scaler that fit together): "
                        f"{type(exc).__name__}: {reason(exc)}") from exc
    payload["arch"] = architecture.read_arch(payload["arch"], f"checkpoint {path}")  # data only
    bad = [k for k, v in payload["state_dict"].items() if not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"checkpoint {path} has non-finite weights in {bad}")
    return payload


def _check_structure(payload: dict[str, Any]) -> None:
    """Raise unless arch, state_dict and scaler describe one network: an MLP rebuilds from the
    weights (names and shapes; other networks are checked when built, since a custom one is
    imported only when the user names it), and the scaler has a column per input and output."""
    arch = payload["arch"]
    d, k = int(arch["input_dim"]), int(arch.get("output_dim", 1))
    if not all(torch.is_tensor(v) for v in payload["state_dict"].values()):
        raise TypeError("state_dict holds values that are not tensors")
    if architecture.kind(arch) == "mlp":
        mlp(d, list(arch["hidden"]), arch["activation"], k).load_state_dict(payload["state_dict"])
    scaler = {key: torch.as_tensor(payload["scaler"][key]).reshape(-1)
              for key in ("x_mean", "x_std", "y_mean", "y_std")}
    if {len(scaler["x_mean"]), len(scaler["x_std"])} != {d}:
        raise ValueError(f"the input scaler does not have {d} columns")
    if {len(scaler["y_mean"]), len(scaler["y_std"])} - {1, k}:
        raise ValueError(f"the output scaler does not have {k} columns")
