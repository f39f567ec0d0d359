"""Regression metrics on the standardised target (the paper's unit)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, rows: int = 8192) -> torch.Tensor:
    """A population's predictions, x (K, n, d) -> (K, n, out), `rows` rows at a time so a large
    test set never holds all of K x n x hidden activations at once."""
    return torch.cat([model(x[:, i:i + rows]) for i in range(0, x.shape[1], rows)], dim=1)


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).pow(2).mean().sqrt())


def r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    residual = (pred - target).pow(2).sum()
    total = (target - target.mean(dim=0)).pow(2).sum()
    return float(1 - residual / total)
