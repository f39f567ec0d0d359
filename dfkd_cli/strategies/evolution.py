"""`evolution`: gradient-free direct optimisation of x by differential evolution (the
derivative-free variant of the paper's direct optimisation, Zhou & Chiam 2023).

For every student step, Gaussian starts X0 ~ N(0, I) (clamped into the teacher's per-feature box,
or with `domain=on` projected onto the input domain, as every labelled sample is) form one or more
DE populations of `starts` individuals each (default: one population, the whole batch).
G generations of DE/best/1/bin or DE/best/2/bin (Storn & Price 1997) maximise, per individual x_i,

    f(x_i) = a * (T(x_i) - S(x_i))^2 - w * (T(x_i) - r_i)^2,   r_i ~ U(target_low, target_high),

with a = `disagreement` and w = `coverage`. Each generation builds, for every i, the mutant

    best/1:  v_i = x_best + F * (x_r1 - x_r2)
    best/2:  v_i = x_best + F * (x_r1 - x_r2) + F * (x_r3 - x_r4)

(r1, r2, ... distinct, none of them i, all in i's population; x_best the fittest of it), the trial
u_i that takes each coordinate from v_i with probability CR and at least one (the "bin"
crossover), clamps u_i into the box (or projects it onto the domain: f is evaluated where the
teacher will label the sample) and keeps it when f(u_i) >= f(x_i). With w = 0 (the default) only
the teacher-student disagreement counts; w > 0 adds the target-coverage term of the paper's
case study, pulling each T(x_i) towards its own r_i (or its population's, `shared_target`) spread
over the target range, in standardised units or in the teacher's raw output units
(`target_units=raw`, converted with each member's output scaler). The case study minimises
-0.05 (T - S)^2 + (T - r)^2, r ~ U(0, 1) in raw solubility: a = 0.05, w = 1, raw units (selection
compares f only, so the standardised f, the raw one over y_sd^2, picks the same individuals).

The batch is the final populations, or with `include_starts` the final populations followed by
their starts (the case study's 5 results plus 5 starts). Only forward passes of T and S are used,
under torch.no_grad, so a teacher without gradients (a black box) serves as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch

from dfkd_cli.errors import UserError
from dfkd_cli.strategies.base import Net, Strategy, StrategyConfig
from dfkd_cli.strategies.registry import register

PAIRS = {"best1bin": 1, "best2bin": 2}  # difference vectors of each DE variant
TARGET_UNITS = ("standardised", "raw")


@dataclass
class EvolutionConfig(StrategyConfig):
    name: str = "evolution"
    variant: str = "best1bin"  # best1bin (DE/best/1/bin) | best2bin (DE/best/2/bin)
    generations: int = 5  # G
    starts: Optional[int] = None  # individuals per DE population; None = the whole batch
    include_starts: bool = False  # the batch: the evolved populations followed by their starts
    mutation: float = 0.5  # F, the differential weight
    crossover: float = 0.7  # CR, the crossover probability
    disagreement: float = 1.0  # a, weight of (T - S)^2
    coverage: float = 0.0  # w, weight of the target-coverage term (0 = off)
    target_low: float = -2.0  # r ~ U(target_low, target_high), in target_units
    target_high: float = 2.0  # the upper end of r's range
    target_units: str = "standardised"  # standardised | raw (the teacher's output units)
    shared_target: bool = False  # one r per population instead of one per individual


def draw_generations(rng, generations: int, groups: int, size: int, d: int, count: int,
                     cr: float, not_self: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The random choices of all G generations of a step in one draw per member: per generation
    `count` distinct partners of each individual, none of them itself (the `count` smallest of
    `size` uniforms, its own pushed last), shape (K, G, groups, size, count), and the binomial
    crossover mask (K, G, groups, size, d): each coordinate from the mutant with probability CR,
    and one forced coordinate so that no trial is a copy of its parent. Each generation's
    uniforms are laid out as drawing them generation by generation would draw them."""
    pick, cross = groups * size * size, groups * size * d
    u = rng.rand(generations, pick + 2 * cross)
    members = u.shape[0]
    partners = (u[..., :pick].view(members, generations, groups, size, size) + not_self
                ).argsort(dim=4)[..., :count]
    mask = u[..., pick:pick + cross].view(members, generations, groups, size, d) < cr
    forced = u[..., pick + cross:].view(members, generations, groups, size, d).argmax(
        dim=4, keepdim=True)
    return partners, mask.scatter_(4, forced, True)


def mutants(x: torch.Tensor, fit: torch.Tensor, partners: torch.Tensor, f: float
            ) -> torch.Tensor:
    """DE/best/p mutants v_i = x_best + F * sum_j (x_{r(2j)} - x_{r(2j+1)}) of populations
    x (K, G, s, d) with fitness (K, G, s) and partners (K, G, s, 2p)."""
    members, groups, size, d = x.shape
    best = x.gather(2, fit.argmax(2)[..., None, None].expand(members, groups, 1, d))
    count = partners.shape[3]
    picked = x.gather(2, partners.reshape(members, groups, size * count, 1)
                      .expand(-1, -1, -1, d)).view(members, groups, size, count, d)
    return best + f * (picked[:, :, :, 0::2] - picked[:, :, :, 1::2]).sum(3)


@register("evolution")
class Evolution(Strategy):
    Config = EvolutionConfig
    needs_box = True

    @classmethod
    def checks(cls, cfg: Any) -> Iterable[tuple[str, bool, str]]:
        return [("variant", cfg.variant in PAIRS, f"one of {tuple(PAIRS)}"),
                ("generations", cfg.generations >= 0, "an integer >= 0"),
                ("starts", cfg.starts is None or cfg.starts >= 2 * PAIRS.get(cfg.variant, 1) + 1,
                 "null or an integer >= 3 (DE/best/1) or >= 5 (DE/best/2): each individual "
                 "needs its own distinct partners"),
                ("mutation", 0 < cfg.mutation <= 2, "a number in (0, 2]"),
                ("crossover", 0 <= cfg.crossover <= 1, "a number in [0, 1]"),
                ("disagreement", cfg.disagreement >= 0, "a number >= 0"),
                ("coverage", cfg.coverage >= 0, "a number >= 0"),
                ("target_high", cfg.target_high >= cfg.target_low,
                 "a number >= strategy.target_low"),
                ("target_units", cfg.target_units in TARGET_UNITS, f"one of {TARGET_UNITS}")]

    def __init__(self, cfg, input_dim, box, rng):
        super().__init__(cfg, input_dim, box, rng)
        self.pairs, self.generations = PAIRS[cfg.variant], int(cfg.generations)
        self.a, self.weight = float(cfg.disagreement), float(cfg.coverage)
        self.f, self.cr = float(cfg.mutation), float(cfg.crossover)
        self.low, self.high = float(cfg.target_low), float(cfg.target_high)
        self.last: dict[str, torch.Tensor] = {}
        self.targets: torch.Tensor | None = None  # r of the last populations, (K, n, 1), if w > 0
        self._eye: torch.Tensor | None = None

    def objective(self, teacher: Net, student: Net, x: torch.Tensor,
                  r: torch.Tensor | None) -> torch.Tensor:
        """f(x) per individual, shape (K, n)."""
        t = teacher(x)
        f = (t - student(x)).pow(2).sum(2)
        if self.a != 1:
            f = self.a * f
        if r is not None:
            f = f - self.weight * (t - r).pow(2).sum(2)
        return f

    def layout(self, n: int) -> tuple[int, int]:
        """(populations, individuals per population) that give a batch of n rows."""
        per_start = 2 if self.cfg.include_starts else 1
        size = self.cfg.starts or n // per_start
        need = 2 * self.pairs + 1
        if size < need or n % (size * per_start):
            what = (f"populations of strategy.starts={self.cfg.starts}" if self.cfg.starts
                    else "one population")
            raise UserError(
                f"strategy=evolution ({self.cfg.variant}) cannot fill a batch of {n} with {what}"
                f"{' plus their starts' if per_start == 2 else ''}: each population needs at "
                f"least {need} individuals and the batch size must be a multiple of "
                f"{'2 x ' if per_start == 2 else ''}its size")
        return n // (size * per_start), size

    def draw_targets(self, groups: int, size: int) -> torch.Tensor | None:
        """r per individual (or per population), (K, groups * size, 1) in standardised units."""
        if self.weight == 0:
            return None
        shape = (groups, 1) if self.cfg.shared_target else (groups * size, 1)
        r = self.low + (self.high - self.low) * self.rng.rand(*shape)
        if self.cfg.shared_target:
            r = r.repeat_interleave(size, dim=1)
        if self.cfg.target_units == "raw":
            if self.y_scale is None:
                raise UserError("strategy.target_units=raw needs the teacher's output scaler")
            y_mean, y_sd = self.y_scale
            r = (r - y_mean.unsqueeze(1)) / y_sd.unsqueeze(1)
        return r

    def _not_self(self, size: int, device: torch.device) -> torch.Tensor:
        """2 on the diagonal: added to uniforms, it sorts i after every possible partner."""
        if self._eye is None or self._eye.shape[0] != size:
            self._eye = torch.eye(size, device=device) * 2
        return self._eye

    @torch.no_grad()
    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        groups, size = self.layout(n)
        d = self.input_dim
        low, high = (bound.unsqueeze(1) for bound in self.need_box())

        def constrain(x: torch.Tensor) -> torch.Tensor:
            """Onto the input domain when the run has one (domain=on), else into the box."""
            return self.project(x) if self.project is not None else torch.clamp(x, low, high)

        start = constrain(self.prior(groups * size))
        members = start.shape[0]
        r = self.draw_targets(groups, size)
        x, fit = start, self.objective(teacher, student, start, r)
        first = fit.mean(1)
        if self.generations:
            partners, cross = draw_generations(
                self.rng, self.generations, groups, size, d, 2 * self.pairs, self.cr,
                self._not_self(size, x.device))
        for g in range(self.generations):
            pop = x.view(members, groups, size, d)
            mutant = mutants(pop, fit.view(members, groups, size), partners[:, g], self.f)
            trial = constrain(torch.where(cross[:, g], mutant, pop).view(members, -1, d))
            trial_fit = self.objective(teacher, student, trial, r)
            better = trial_fit >= fit
            x = torch.where(better.unsqueeze(2), trial, x)
            fit = torch.where(better, trial_fit, fit)
        self.targets = r
        self.last = {"evo_objective_start": first, "evo_objective_end": fit.mean(1)}
        if self.cfg.include_starts:
            self.start = torch.cat([start, start], dim=1)
            return torch.cat([x, start], dim=1)
        self.start = start
        return x

    def update(self, teacher: Net, student: Net) -> dict[str, torch.Tensor]:
        """The mean objective f over the previous batch, at its start and after G generations."""
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        return {"last": dict(self.last)}  # so a resumed run logs the same diagnostics

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = dict(state["last"])
