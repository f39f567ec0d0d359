"""Regression metrics on the standardised target (the paper's unit)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 65536) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).pow(2).mean().sqrt())


def r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    residual = (pred - target).pow(2).sum()
    total = (target - target.mean(dim=0)).pow(2).sum()
    return float(1 - residual / total)
