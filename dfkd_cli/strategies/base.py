"""The strategy seam: every synthetic-data strategy answers `update` and `sample`.

The student loop (distill.py) never asks which strategy it holds. Inputs live in the teacher's
standardised input space, where N(0, I) is the prior (shape after zju-vipa/DataFree's
BaseSynthesis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from omegaconf import MISSING
from torch import nn

Box = tuple[torch.Tensor, torch.Tensor]  # per-feature (low, high), standardised units


@dataclass
class StrategyConfig:
    """Common part of every strategy's schema; each strategy adds its hyper-parameters."""

    name: str = MISSING


class Strategy:
    """Base class: plain N(0, I) sampling with no state. Subclasses override what they change."""

    Config: type = StrategyConfig

    def __init__(self, cfg: Any, input_dim: int, box: Box | None, device: torch.device):
        self.cfg = cfg
        self.input_dim = input_dim
        self.box = box
        self.device = device
        self.start: torch.Tensor | None = None  # starting points of the last batch, if any

    @classmethod
    def checks(cls, cfg: Any) -> Iterable[tuple[str, bool, str]]:
        """(key, ok, what is valid) for range checks on this strategy's config."""
        return ()

    def prior(self, n: int) -> torch.Tensor:
        """x_p ~ N(0, I), shape (n, d)."""
        return torch.randn(n, self.input_dim, device=self.device)

    def update(self, teacher: nn.Module, student: nn.Module) -> dict[str, torch.Tensor]:
        """Once per epoch: adapt internal state (a generator's weights); return diagnostics as
        0-d tensors (read only at the log interval, so no host sync here)."""
        return {}

    def sample(self, teacher: nn.Module, student: nn.Module, n: int) -> torch.Tensor:
        """n synthetic inputs x_g, shape (n, d)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@torch.no_grad()
def batch_diagnostics(teacher: nn.Module, student: nn.Module, x: torch.Tensor,
                      start: torch.Tensor | None, box: Box | None) -> dict[str, float]:
    """What a synthetic batch looks like: the (T - S)^2 it carries and where it lies."""
    gap = (teacher(x) - student(x)).pow(2).sum(dim=1)
    stats = {"gap_mean": gap.mean(), "gap_max": gap.max(), "x_norm": x.norm(dim=1).mean()}
    if start is not None:
        step = (x - start).abs().amax(dim=1)  # L-infinity distance from the Gaussian start
        stats["start_dist_mean"] = step.mean()
        stats["start_dist_max"] = step.max()
    if box is not None:
        low, high = box
        stats["outside_box"] = ((x < low) | (x > high)).any(dim=1).float().mean()
    return {k: float(v) for k, v in stats.items()}
