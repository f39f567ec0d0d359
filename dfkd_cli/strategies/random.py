"""`random`: x_g ~ N(0, I), labelled by the teacher (the paper's random-sampling baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dfkd_cli.strategies.base import Net, Strategy, StrategyConfig
from dfkd_cli.strategies.registry import register


@dataclass
class RandomConfig(StrategyConfig):
    name: str = "random"


@register("random")
class RandomSampling(Strategy):
    Config = RandomConfig

    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        return self.prior(n)
