"""The MLP family (single and stacked), and checkpoints that hold weights and plain metadata only.

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
from dfkd_cli.rng import Streams

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


class StackedMLP(nn.Module):
    """K independent MLPs of one architecture in one batched program: (K, n, d) -> (K, n, out).

    Layer i holds weights (K, in, out) and biases (K, 1, out) and runs as one baddbmm, so the
    cost of a step hardly grows with K. Member k is initialised from its own random stream like
    nn.Linear (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases).
    """

    def __init__(self, members: int, input_dim: int, hidden: list[int], activation: str,
                 output_dim: int = 1):
        super().__init__()
        widths = [input_dim, *hidden, output_dim]
        self.activation = activation
        self.act = _ACTIVATIONS[activation]()
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(members, a, b)) for a, b in zip(widths, widths[1:]))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(members, 1, b)) for b in widths[1:])

    @property
    def members(self) -> int:
        return self.weights[0].shape[0]

    @torch.no_grad()
    def init_(self, rng: Streams) -> "StackedMLP":
        for w, b in zip(self.weights, self.biases):
            bound = w.shape[1] ** -0.5
            w.copy_(rng.rand(*w.shape[1:]) * 2 * bound - bound)
            b.copy_(rng.rand(*b.shape[1:]) * 2 * bound - bound)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = self.act(x)
        return x

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k as the state dict of the equivalent `mlp(...)` (nn.Sequential)."""
        state = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            state[f"{2 * i}.weight"] = w[k].detach().t().contiguous()
            state[f"{2 * i}.bias"] = b[k, 0].detach().clone()
        return state

    @classmethod
    def from_state_dicts(cls, states: list[dict[str, torch.Tensor]], activation: str
                         ) -> "StackedMLP":
        """Stack K nn.Sequential MLP state dicts of one architecture into one StackedMLP."""
        layers = sorted({int(k.split(".")[0]) for k in states[0]})
        first = [states[0][f"{i}.weight"] for i in layers]  # (out, in) each
        widths = [first[0].shape[1]] + [w.shape[0] for w in first]
        model = cls(len(states), widths[0], widths[1:-1], activation, widths[-1])
        with torch.no_grad():
            for i, (w, b) in zip(layers, zip(model.weights, model.biases)):
                w.copy_(torch.stack([s[f"{i}.weight"].t() for s in states]))
                b.copy_(torch.stack([s[f"{i}.bias"] for s in states]).unsqueeze(1))
        return model


def arch_name(hidden: list[int], activation: str) -> str:
    """A short name for an architecture, e.g. 'mlp500-tanh' (used as the teacher store key)."""
    return "mlp" + "x".join(str(h) for h in hidden) + f"-{activation}"


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], arch: dict[str, Any],
                    **meta: Any) -> None:
    """Write weights (an `mlp` state dict) + architecture + plain metadata (scalers, input spec,
    metrics) atomically."""
    payload = {"format": FORMAT, "version": VERSION, "arch": arch,
               "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
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
