"""`lhs`: x_g is a Latin hypercube of n points in the teacher's per-feature box.

Each feature's range [min, max] is cut into n equal strata and every stratum holds exactly one of
the n points of the batch (a fresh random permutation per feature and batch, uniform jitter within
the stratum; McKay, Beckman & Conover 1979). Like `uniform` it covers the box, with less clumping
per feature. The student minimises (T(x_g) - S(x_g))^2 in the alpha-mixed loss (Zhou & Chiam
2023, Eq. 6).
"""

from __future__ import annotations

import torch

from dfkd_cli.strategies.base import Net, Strategy
from dfkd_cli.strategies.schemas import LHSConfig


class LatinHypercube(Strategy):
    Config = LHSConfig
    needs_box = True

    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        d = self.input_dim
        # argsort of n uniforms is a uniformly random permutation: strata[k, i, j] is the stratum
        # of point i in feature j, each of 0..n-1 once per (member, feature)
        strata = self.rng.rand(d, n).argsort(dim=2).transpose(1, 2)
        return self.in_box((strata + self.rng.rand(n, d)) / n)
