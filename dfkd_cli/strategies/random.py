"""`random`: x_g ~ N(0, I), labelled by the teacher (the paper's random-sampling baseline)."""

from __future__ import annotations

import torch

from dfkd_cli.strategies.base import Net, Strategy
from dfkd_cli.strategies.schemas import RandomConfig


class RandomSampling(Strategy):
    Config = RandomConfig

    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        return self.prior(n)
