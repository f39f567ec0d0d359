"""Regression metrics per output column, and a population's predictions.

Tensors are (n, k) or (K, n, k): rows on the second-to-last axis, outputs on the last. Every
metric is computed per output; tables report the mean over outputs under the plain name
(`student_rmse`) and, for k > 1 outputs, one column per output (`student_rmse_<target>`).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, rows: int = 8192) -> torch.Tensor:
    """A population's predictions, x (K, n, d) -> (K, n, out), `rows` rows at a time so a large
    test set never holds all of K x n x hidden activations at once."""
    return torch.cat([model(x[:, i:i + rows]) for i in range(0, x.shape[1], rows)], dim=1)


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root mean squared error per output, shape (k,)."""
    return (pred - target).pow(2).mean(dim=-2).sqrt()


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per output, shape (k,)."""
    return (pred - target).abs().mean(dim=-2)


def r2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per output, shape (k,)."""
    residual = (pred - target).pow(2).sum(dim=-2)
    total = (target - target.mean(dim=-2, keepdim=True)).pow(2).sum(dim=-2)
    return 1 - residual / total


def columns(name: str, values: torch.Tensor, outputs: list[str]) -> dict[str, float]:
    """{name: mean over outputs} and, for several outputs, {name_<output>: value} each."""
    values = values.double().reshape(-1).cpu()
    row = {name: float(values.mean())}
    if len(outputs) > 1:
        row |= {f"{name}_{out}": float(v) for out, v in zip(outputs, values)}
    return row


def scores(name: str, pred: torch.Tensor, target: torch.Tensor, outputs: list[str],
           y_std: torch.Tensor | None = None) -> dict[str, float]:
    """Table columns for one model on one target: {name}_rmse, {name}_r2 and, given the target
    scaler's sd, {name}_rmse_original (raw units); see `columns` for several outputs."""
    error = rmse(pred, target)
    row = columns(f"{name}_rmse", error, outputs) | columns(f"{name}_r2", r2(pred, target), outputs)
    if y_std is not None:
        row |= columns(f"{name}_rmse_original", error * y_std.to(error.device), outputs)
    return row
