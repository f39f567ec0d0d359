"""`impressions`: Data Impressions for regression (Nayak et al. 2019, as adapted by Kang & Kang
2021, ESWA 175:114813), a baseline that needs only the teacher.

A conditional generator (z, y*) -> (mu, log sigma^2), z in R^50, one hidden layer of 500 tanh
units, is fitted once before the student's first step (`prepare`), for 2000 RMSprop steps (lr
1e-3, weight decay 1e-5) on batches of m, minimising

    L_DI = mean( (T(x) - y*)^2 + delta * KL( N(mu, sigma^2) || N(0, I) ) ),
    x = mu + sigma * eps,  eps ~ N(0, I),  y* ~ N(0, 1),  z ~ N(0, I),

delta = 1e-5, y* on the standardised target: x is an input the teacher maps to the requested
target, and the KL term keeps it near the N(0, I) prior. (Kang & Kang's released version wires
the output layer to z by mistake, so their generator ignores y*; this one conditions on it.) The
student then draws x_g = mu + sigma * eps with fresh (z, y*, eps) for each step, under the alpha
schedule of Zhou & Chiam (2023, Eq. 6). The generator does not move during the student's training.
"""

from __future__ import annotations

from typing import Any

import torch

from dfkd_cli.errors import UserError
from dfkd_cli.strategies.base import Net
from dfkd_cli.strategies.network import NetworkStrategy
from dfkd_cli.strategies.schemas import ImpressionsConfig


class Impressions(NetworkStrategy):
    """The conditional generator (z, y*) -> (mu, log sigma^2), the network of NetworkStrategy."""

    Config = ImpressionsConfig

    def __init__(self, config, input_dim, box, rng):
        super().__init__(config, input_dim, box, rng)
        self.latent_dim = int(self.config.latent_dim)
        # input (z, y*), output (mu, log sigma^2): a single standardised target, as dfkd teachers
        self.build_network(self.latent_dim + 1, 2 * input_dim)
        self.delta = float(config.delta)
        self.prepared = False

    def draw(self, n: int) -> dict[str, torch.Tensor]:
        """y* ~ N(0, 1) and x = mu(z, y*) + sigma(z, y*) * eps with the generator's (mu, log var)."""
        y = self.rng.randn(n, 1)
        z = self.rng.randn(n, self.latent_dim)
        eps = self.rng.randn(n, self.input_dim)
        mu, log_var = self.net(torch.cat([z, y], dim=2)).chunk(2, dim=2)
        return {"x": mu + (0.5 * log_var).exp() * eps, "y": y, "mu": mu, "log_var": log_var}

    def objective(self, teacher: Net, n: int) -> dict[str, torch.Tensor]:
        """L_DI and its terms per member ((K,) tensors, differentiable in the generator)."""
        d = self.draw(n)
        out = teacher(d["x"])
        if out.shape[2] != 1:
            raise UserError(f"strategy=impressions conditions on one target; the teacher has "
                            f"{out.shape[2]} outputs")
        fit = (out - d["y"]).pow(2).mean(dim=(1, 2))
        kl = 0.5 * (d["mu"].pow(2) + d["log_var"].exp() - 1 - d["log_var"]).sum(2).mean(1)
        return {"loss": fit + self.delta * kl, "fit": fit, "kl": kl}

    def prepare(self, teacher: Net) -> dict[str, torch.Tensor]:
        if self.prepared:  # a resumed run keeps its fitted generator
            return {}
        terms = self.fit(int(self.config.steps),
                         lambda: self.objective(teacher, int(self.config.batch_size)))
        self.prepared = True
        if terms is None:
            return {}
        return {"impressions_fit": terms["fit"].detach(), "impressions_kl": terms["kl"].detach()}

    @torch.no_grad()
    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        return self.draw(n)["x"]

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"prepared": self.prepared}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.prepared = bool(state["prepared"])
