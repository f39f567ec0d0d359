"""`bounded`: the paper's proposal (Zhou & Chiam 2023, Sec. 3.2), direct optimisation of x.

For every student step draw X0 ~ N(0, I) of shape (m, d) (per population member) and take K RMSprop steps on x
(learning rate lr, weight decay beta, fresh optimiser state per batch) minimising

    L_x = mean( -(T(x) - S(x))^2 + gamma * S(x)^2 ),

then use the result as x_g. RMSprop's first step is about lr / sqrt(1 - rho) = 1 per coordinate,
so with K = 2, lr = 0.1 each coordinate ends within about 2 of its Gaussian start: the
teacher-student difference is pushed up while the samples stay near the prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch

from dfkd_cli.strategies.base import Net, Strategy, StrategyConfig
from dfkd_cli.strategies.registry import register

EPS = 1e-8  # torch.optim.RMSprop's default


@dataclass
class BoundedConfig(StrategyConfig):
    name: str = "bounded"
    steps: int = 2  # K
    lr: float = 0.1
    beta: float = 1e-5  # weight decay on x
    gamma: float = 1e-5  # weight of S(x)^2
    rho: float = 0.99  # RMSprop smoothing constant (torch's `alpha`)


@register("bounded")
class Bounded(Strategy):
    Config = BoundedConfig

    @classmethod
    def checks(cls, cfg: Any) -> Iterable[tuple[str, bool, str]]:
        return [("steps", cfg.steps >= 0, "an integer >= 0"),
                ("lr", cfg.lr > 0, "a number > 0"),
                ("beta", cfg.beta >= 0, "a number >= 0"),
                ("gamma", cfg.gamma >= 0, "a number >= 0"),
                ("rho", 0 <= cfg.rho < 1, "a number in [0, 1)")]

    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        cfg = self.cfg
        start = self.prior(n)
        x, square_avg = start, torch.zeros_like(start)
        for _ in range(cfg.steps):
            x = x.detach().requires_grad_(True)
            s = student(x)
            # mean over each member's batch, summed over members (which keeps them independent)
            loss = (-(teacher(x) - s).pow(2).sum(2) + cfg.gamma * s.pow(2).sum(2)).mean(1).sum()
            (grad,) = torch.autograd.grad(loss, x)
            # One step of torch.optim.RMSprop (no momentum, not centred), written out so the
            # per-step cost is a few tensor ops instead of a new optimiser per batch.
            with torch.no_grad():
                grad = grad.add(x, alpha=cfg.beta)
                square_avg.mul_(cfg.rho).addcmul_(grad, grad, value=1 - cfg.rho)
                x = x.addcdiv(grad, square_avg.sqrt().add_(EPS), value=-cfg.lr)
        self.start = start
        return x.detach()
