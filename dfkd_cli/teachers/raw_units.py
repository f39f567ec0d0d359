"""A dfkd checkpoint as a model of raw features -> raw targets: its scalers, its column names,
its network, and the network with the scalers folded in (what `dfkd export` writes and
`dfkd evaluate` scores).

For an MLP the scalers are folded into the first and last Linear layers: first layer
W' = W / x_std, b' = b - W' x_mean; last layer W' = y_std W, b' = y_std b + y_mean; the
activations are torch's own modules (nn.Tanh, ...), which every runtime knows. Any other network
is wrapped between two explicit layers, `Standardise` and `Unstandardise`. A custom network is
rebuilt only when the user names its class (`--net-target`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dfkd_cli.data.datasets import Scaler
from dfkd_cli.errors import UserError
from dfkd_cli.nets import architecture, checkpoints, factory, mlp
from dfkd_cli.nets.activations import ACTIVATIONS, Activation

CHECKPOINT = "student.pt"  # what a run directory holds
TARGET_KEY = "--net-target"  # how a user names a custom network's class to these commands


def scaler(payload: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_mean (d,), x_std (d,), y_mean (k,), y_std (k,) as float32 vectors."""
    s = Scaler.from_payload(payload["scaler"])
    return s.x_mean, s.x_std, s.y_mean, s.y_std


def feature_names(payload: dict) -> list[str] | None:
    """The input columns a checkpoint records (a student's "features", a teacher's
    "input_spec"), or None."""
    names = payload.get("features") or (payload.get("input_spec") or {}).get("features")
    return list(names) if names else None


def target_names(payload: dict) -> list[str] | None:
    return list(payload["targets"]) if payload.get("targets") else None


def network(payload: dict, net_target: str | None, source: str = "the checkpoint"
            ) -> nn.Module:
    """The checkpoint's network (standardised units), its weights loaded; a custom network's
    class only when `net_target` names it, else a UserError naming the key to pass."""
    return factory.from_checkpoint(payload, net_target, TARGET_KEY, source)


def scaled_predict(payload: dict, x: torch.Tensor, net_target: str | None = None
                   ) -> torch.Tensor:
    """The checkpoint's network with explicit scaling, in float64: (x - mean) / sd -> network ->
    y sd + mean. The reference every export is checked against."""
    x_mean, x_std, y_mean, y_std = (v.double() for v in scaler(payload))
    model = network(payload, net_target).double().eval()
    with torch.no_grad():
        return mlp.columns(model((x.double() - x_mean) / x_std)) * y_std + y_mean


class Standardise(nn.Module):
    """Raw features -> the network's standardised inputs, (x - mean) / sd."""

    def __init__(self, mean: torch.Tensor, sd: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("sd", sd.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.sd


class Unstandardise(Standardise):
    """The network's standardised outputs -> raw targets, y sd + mean, as (n, k)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return mlp.columns(y) * self.sd + self.mean


@torch.no_grad()
def raw_model(payload: dict, net_target: str | None = None) -> nn.Sequential:
    """The checkpoint's network as an nn.Sequential of raw features -> raw targets: for an MLP
    the scalers folded into the first and last Linear layers (in float64) with standard
    activation modules, for any other network explicit Standardise / Unstandardise layers."""
    arch = payload["arch"]
    x_mean, x_std, y_mean, y_std = (v.double() for v in scaler(payload))
    if len(x_mean) != arch["input_dim"] or len(x_std) != arch["input_dim"]:
        raise UserError(f"the input scaler has {len(x_mean)} columns but the model takes "
                        f"{arch['input_dim']} inputs")
    if {len(y_mean), len(y_std)} - {1, arch.get("output_dim", 1)}:
        raise UserError(f"the output scaler has {len(y_mean)} columns but the model gives "
                        f"{arch.get('output_dim', 1)} outputs")
    net = network(payload, net_target)
    if architecture.kind(arch) != "mlp":
        x_mean, x_std, y_mean, y_std = scaler(payload)
        return nn.Sequential(Standardise(x_mean, x_std), net, Unstandardise(y_mean, y_std)).eval()
    layers = [ACTIVATIONS[m.name].module() if isinstance(m, Activation) else m for m in net]
    first, last = layers[0], layers[-1]
    weight = first.weight.double() / x_std
    first.bias.copy_(first.bias.double() - weight @ x_mean)
    first.weight.copy_(weight)
    last.bias.copy_(last.bias.double() * y_std + y_mean)
    last.weight.copy_(last.weight.double() * y_std[:, None])
    return nn.Sequential(*layers).eval()


def load(path: str | Path) -> tuple[Path, dict]:
    """(checkpoint file, payload) for a checkpoint or a run directory holding student.pt."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT).is_file():
            raise UserError(f"{path} is a directory without a {CHECKPOINT}")
        path = path / CHECKPOINT
    return path, checkpoints.load_checkpoint(path)
