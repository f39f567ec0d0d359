"""`bounded`: the paper's proposal (Zhou & Chiam 2023, Sec. 3.2), direct optimisation of x.

For every student step draw X0 ~ N(0, I) of shape (m, d) (per population member) and take K RMSprop steps on x
(learning rate lr, weight decay beta, fresh optimiser state per batch) minimising

    L_x = mean( -(T(x) - S(x))^2 + gamma * S(x)^2 ),

then use the result as x_g. RMSprop's first step is about lr / sqrt(1 - rho) = 1 per coordinate,
so with K = 2, lr = 0.1 each coordinate ends within about 2 of its Gaussian start: the
teacher-student difference is pushed up while the samples stay near the prior (the paper's
implicit bound).

An explicit bound, off by default: `radius=r` projects x after every step onto the L-infinity
ball of radius r around its start X0 (x <- X0 + clamp(x - X0, -r, r)), and `clip_to_box=true`
clamps x after every step to the teacher's per-feature box [min, max] (needs a dfkd teacher).
With both, x is clamped to the intersection of the two boxes, and to the feature box alone for a
coordinate whose start lies more than r outside it.

A smoothness prior for images, off by default: `tv=w` adds w * TV(x) to L_x, the squared total
variation of each sample as a picture (data/images.py; DeepInversion's R_TV), so the steps that
raise the gap also keep neighbouring pixels alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch

from dfkd_cli.data.images import total_variation
from dfkd_cli.nets.optim import EPS, rmsprop_
from dfkd_cli.strategies.base import Net, Strategy, StrategyConfig
from dfkd_cli.strategies.registry import register


@dataclass
class BoundedConfig(StrategyConfig):
    name: str = "bounded"
    steps: int = 2  # K
    lr: float = 0.1  # RMSprop's step size on x
    beta: float = 1e-5  # weight decay on x
    gamma: float = 1e-5  # weight of S(x)^2
    rho: float = 0.99  # RMSprop smoothing constant (torch's `alpha`)
    radius: Optional[float] = None  # project onto |x - X0|_inf <= radius after every step
    clip_to_box: bool = False  # clamp to the teacher's feature box after every step
    tv: float = 0.0  # weight of the samples' squared total variation (image-shaped inputs)


@register("bounded")
class Bounded(Strategy):
    Config = BoundedConfig
    needs_gradients = True

    @classmethod
    def checks(cls, cfg: Any) -> Iterable[tuple[str, bool, str]]:
        return [("steps", cfg.steps >= 0, "an integer >= 0"),
                ("lr", cfg.lr > 0, "a number > 0"),
                ("beta", cfg.beta >= 0, "a number >= 0"),
                ("gamma", cfg.gamma >= 0, "a number >= 0"),
                ("rho", 0 <= cfg.rho < 1, "a number in [0, 1)"),
                ("radius", cfg.radius is None or cfg.radius > 0, "null or a number > 0"),
                ("tv", cfg.tv >= 0, "a number >= 0")]

    @classmethod
    def needs_image(cls, cfg: Any) -> str | None:
        return "tv" if cfg.tv > 0 else None

    @property
    def needs_box(self) -> bool:
        return bool(self.cfg.clip_to_box)

    @torch.no_grad()
    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        cfg = self.cfg
        start = self.prior(n)
        x, square_avg = start.clone(), torch.zeros_like(start)
        for _ in range(cfg.steps):
            # dL_x/dx through the network seam (trace / input_grad: by hand on the fast path,
            # by autograd otherwise): L_x is a mean over each member's
            # batch, so dL/dT = -2 (T - S) / n and dL/dS = 2 (T - S) / n + 2 gamma S / n.
            t_saved, s_saved = teacher.trace(x), student.trace(x)
            s = s_saved[-1]
            diff = (t_saved[-1] - s) * (2 / n)
            grad = torch.sub(student.input_grad(s_saved, diff.add(s, alpha=2 * cfg.gamma / n)),
                             teacher.input_grad(t_saved, diff))
            if cfg.tv:
                grad += self.smoothness_grad(x, cfg.tv / n)
            # one step of torch.optim.RMSprop (no momentum, not centred) with its state
            # square_avg, through the kernel the fast path's optimiser runs
            rmsprop_(x, grad, square_avg, cfg.lr, cfg.rho, EPS, cfg.beta)
            if cfg.radius is not None:
                x = torch.maximum(torch.minimum(x, start + cfg.radius), start - cfg.radius)
            if cfg.clip_to_box:
                x = self.clamp_to_box(x)
        self.start = start
        return x

    def smoothness_grad(self, x: torch.Tensor, weight: float) -> torch.Tensor:
        """d(weight * sum of TV(x))/dx, (K, n, d): the tv term's share of dL_x/dx."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            tv = total_variation(self.image.to_images(x)).sum() * weight
            return torch.autograd.grad(tv, x)[0]
