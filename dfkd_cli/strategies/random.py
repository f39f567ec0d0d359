"""`random`: x_g ~ N(0, I), labelled by the teacher (the paper's random-sampling baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dfkd_cli.strategies.base import Strategy, StrategyConfig
from dfkd_cli.strategies.registry import register


@dataclass
class RandomConfig(StrategyConfig):
    name: str = "random"


@register("random")
class RandomSampling(Strategy):
    Config = RandomConfig

    def sample(self, teacher: nn.Module, student: nn.Module, n: int) -> torch.Tensor:
        return self.prior(n)
