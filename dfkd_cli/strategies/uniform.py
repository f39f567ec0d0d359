"""`uniform`: x_g ~ U(box), uniform in the teacher's per-feature box (a sampling baseline).

The box is [min, max] of each feature over the teacher's training rows, in standardised units
(the input_spec of a dfkd teacher checkpoint). No objective: x_g is drawn, labelled by T and the
student minimises (T(x_g) - S(x_g))^2 in the alpha-mixed loss (Zhou & Chiam 2023, Eq. 6). Unlike
x_p ~ N(0, I) it covers the box evenly, tails and corners included.
"""

from __future__ import annotations

import torch

from dfkd_cli.strategies.base import Net, Strategy
from dfkd_cli.strategies.schemas import UniformConfig


class UniformSampling(Strategy):
    Config = UniformConfig
    needs_box = True

    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        return self.in_box(self.rng.rand(n, self.input_dim))
