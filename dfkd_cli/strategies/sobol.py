"""`sobol`: x_g is the next n points of a scrambled Sobol sequence, mapped into the teacher's box.

A low-discrepancy sequence (Sobol 1967; Owen scrambling) covers the per-feature box more evenly
than independent uniform draws. Each population member has its own sequence, scrambled with a
seed drawn from the member's random stream, so a run is reproducible and member k equals a
separate run with seed k; consecutive batches continue the sequence. The student minimises
(T(x_g) - S(x_g))^2 in the alpha-mixed loss (Zhou & Chiam 2023, Eq. 6).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.quasirandom import SobolEngine

from dfkd_cli.strategies.base import Net, Strategy
from dfkd_cli.strategies.schemas import SobolConfig

SEED_BITS = 24  # a float32 uniform carries 24 random bits; two make a 48-bit scrambling seed


class SobolSampling(Strategy):
    Config = SobolConfig
    needs_box = True

    def __init__(self, config, input_dim, box, rng):
        super().__init__(config, input_dim, box, rng)
        bits = (rng.rand(2) * 2 ** SEED_BITS).long().tolist()  # once, at set-up
        self.seeds = [hi * 2 ** SEED_BITS + lo for hi, lo in bits]
        self.engines = [self._engine(s) for s in self.seeds]

    def _engine(self, seed: int) -> SobolEngine:
        return SobolEngine(self.input_dim, scramble=True, seed=seed)

    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        # the engines run on the CPU; the batch goes to the device in one copy (no host sync)
        u = torch.stack([e.draw(n, dtype=torch.float32) for e in self.engines])
        return self.in_box(u.to(self.rng.device, non_blocking=True))

    def state_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "drawn": [e.num_generated for e in self.engines]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seeds = [int(s) for s in state["seeds"]]
        self.engines = [self._engine(s).fast_forward(int(n))
                        for s, n in zip(self.seeds, state["drawn"])]
