"""`evolution`: gradient-free direct optimisation of x by differential evolution (the
derivative-free variant of the paper's direct optimisation, Zhou & Chiam 2023).

For every student step the population is the m Gaussian starts X0 ~ N(0, I) (clamped into the
teacher's per-feature box); G generations of DE/best/1/bin (Storn & Price 1997) maximise, per
individual x_i,

    f(x_i) = (T(x_i) - S(x_i))^2 - w * (T(x_i) - r_i)^2,   r_i ~ U(target_low, target_high),

and the final population is x_g. Each generation builds, for every i, the mutant
v_i = x_best + F * (x_r1 - x_r2) (r1 != r2, both != i), the trial u_i that takes each coordinate
from v_i with probability CR (and at least one), clamps u_i into the box and keeps it when
f(u_i) >= f(x_i). With w = 0 (the default) only the teacher-student disagreement counts; w > 0
adds the target-coverage term of the paper's case study, pulling each T(x_i) towards its own
r_i spread over the (standardised) target range. Only forward passes of T and S are used, under
torch.no_grad, so a teacher without gradients (a black box) serves as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch

from dfkd_cli.errors import UserError
from dfkd_cli.strategies.base import Net, Strategy, StrategyConfig
from dfkd_cli.strategies.registry import register


@dataclass
class EvolutionConfig(StrategyConfig):
    name: str = "evolution"
    generations: int = 5  # G
    mutation: float = 0.5  # F, the differential weight
    crossover: float = 0.7  # CR, the crossover probability
    coverage: float = 0.0  # w, weight of the target-coverage term (0 = off)
    target_low: float = -2.0  # r ~ U(target_low, target_high), standardised target units
    target_high: float = 2.0


@register("evolution")
class Evolution(Strategy):
    Config = EvolutionConfig
    needs_box = True

    @classmethod
    def checks(cls, cfg: Any) -> Iterable[tuple[str, bool, str]]:
        return [("generations", cfg.generations >= 0, "an integer >= 0"),
                ("mutation", 0 < cfg.mutation <= 2, "a number in (0, 2]"),
                ("crossover", 0 <= cfg.crossover <= 1, "a number in [0, 1]"),
                ("coverage", cfg.coverage >= 0, "a number >= 0"),
                ("target_high", cfg.target_high >= cfg.target_low,
                 "a number >= strategy.target_low")]

    def __init__(self, cfg, input_dim, box, rng):
        super().__init__(cfg, input_dim, box, rng)
        self.generations, self.weight = int(cfg.generations), float(cfg.coverage)
        self.f, self.cr = float(cfg.mutation), float(cfg.crossover)
        self.low, self.high = float(cfg.target_low), float(cfg.target_high)
        self.last: dict[str, torch.Tensor] = {}
        self.targets: torch.Tensor | None = None  # r of the last batch, (K, n, 1), when w > 0
        self._eye: torch.Tensor | None = None

    def objective(self, teacher: Net, student: Net, x: torch.Tensor,
                  r: torch.Tensor | None) -> torch.Tensor:
        """f(x) per individual, shape (K, n)."""
        t = teacher(x)
        f = (t - student(x)).pow(2).sum(2)
        if r is not None:
            f = f - self.weight * (t - r).pow(2).sum(2)
        return f

    def _not_self(self, n: int, device: torch.device) -> torch.Tensor:
        """2 on the diagonal: added to uniforms, it sorts i after every possible partner."""
        if self._eye is None or self._eye.shape[0] != n:
            self._eye = torch.eye(n, device=device) * 2
        return self._eye

    @torch.no_grad()
    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        if n < 3:
            raise UserError(f"strategy=evolution needs a batch of at least 3 (DE/best/1 draws two "
                            f"partners besides each individual); got {n}")
        d = self.input_dim
        x = self.clamp_to_box(self.prior(n))
        start = x
        r = None
        if self.weight > 0:
            r = self.low + (self.high - self.low) * self.rng.rand(n, 1)
        fit = self.objective(teacher, student, x, r)
        first = fit.mean(1)
        not_self = self._not_self(n, x.device)
        for _ in range(self.generations):
            members = x.shape[0]
            best = x.gather(1, fit.argmax(1).view(members, 1, 1).expand(members, 1, d))
            # two distinct partners r1, r2 != i for every i: the two smallest of n uniforms
            partners = (self.rng.rand(n, n) + not_self).argsort(dim=2)[:, :, :2]
            a = x.gather(1, partners[:, :, :1].expand(members, n, d))
            b = x.gather(1, partners[:, :, 1:].expand(members, n, d))
            mutant = best + self.f * (a - b)
            cross = self.rng.rand(n, d) < self.cr
            forced = self.rng.rand(n, d).argmax(dim=2, keepdim=True)  # at least one coordinate
            cross.scatter_(2, forced, True)
            trial = self.clamp_to_box(torch.where(cross, mutant, x))
            trial_fit = self.objective(teacher, student, trial, r)
            better = trial_fit >= fit
            x = torch.where(better.unsqueeze(2), trial, x)
            fit = torch.where(better, trial_fit, fit)
        self.start, self.targets = start, r
        self.last = {"evo_objective_start": first, "evo_objective_end": fit.mean(1)}
        return x

    def update(self, teacher: Net, student: Net) -> dict[str, torch.Tensor]:
        """The mean objective f over the previous batch, at its start and after G generations."""
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        return {"last": dict(self.last)}  # so a resumed run logs the same diagnostics

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = dict(state["last"])
