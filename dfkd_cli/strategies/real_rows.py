"""`real_rows`: the real-data reference, x_g = the split's training rows (not data-free).

The same student, optimiser, epochs, steps, batch and selection as the data-free arms, but its
x_g are rows of the member's own training split, drawn uniformly with replacement from the
member's random stream; validation and test rows are never handed to it. They are labelled
by the teacher (`labels=teacher`: knowledge distillation with the data, the ceiling of any
data-free strategy, `arm=real_kd`) or by their real targets (`labels=targets`: the student
trained alone, `arm=real_data`). The loss is Eq. 6 of Zhou & Chiam (2023) with these x_g and
labels; the arms set alpha = 1, so every row of every batch is a training row.
"""

from __future__ import annotations

from typing import Any

import torch

from dfkd_cli.strategies.base import Net, Strategy
from dfkd_cli.strategies.schemas import RealRowsConfig


class RealRows(Strategy):
    Config = RealRowsConfig
    needs_rows = True

    def __init__(self, config: Any, input_dim: int, box, rng, rows=None):
        super().__init__(config, input_dim, box, rng, rows)
        self.picked: torch.Tensor | None = None  # (K, n, 1) row indices of the last batch

    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        x_rows, _ = self.rows
        self.picked = self.rng.randint(x_rows.shape[1], n, 1)
        return torch.take_along_dim(x_rows, self.picked, dim=1)

    def labels(self, teacher: Net, x: torch.Tensor, n_g: int) -> torch.Tensor:
        if self.config.labels == "teacher" or n_g == 0:
            return teacher(x)
        y = torch.take_along_dim(self.rows[1], self.picked, dim=1)
        return y if n_g == x.shape[1] else torch.cat([y, teacher(x[:, n_g:])], dim=1)
