"""Priors over the teacher's standardised inputs: where x_p (and the bounded strategy's start)
is drawn from, built from the summaries a domain carries (data/domains.py)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from dfkd_cli.data.domains import Domain
from dfkd_cli.errors import UserError

log = logging.getLogger(__name__)

PRIORS = ("auto", "gaussian", "correlated", "copula")


def _square_root(correlations: list[Any], device: torch.device) -> torch.Tensor:
    """A (K, d, d) with A A^T = C for each member's correlation C (eigen-decomposition, so a
    singular C, e.g. of a simplex group, is fine)."""
    c = torch.tensor(correlations, dtype=torch.float64)
    values, vectors = torch.linalg.eigh(c)
    return (vectors * values.clamp(min=0).sqrt().unsqueeze(1)).float().to(device)


class Prior:
    """Draws x_p (K, n, d) in the standardised space: `gaussian` N(0, I) (the paper's),
    `correlated` N(0, C) with the stored correlation C of the standardised inputs, or `copula`
    (a Gaussian copula: g ~ N(0, C_s) with the normal-score correlation C_s, u = Phi(g), each
    feature the stored marginal quantile function at u, linearly interpolated, standardised).
    `auto` is copula for a teacher that carries the statistics, else gaussian (logged). `remedy`
    ends the error for a prior the teacher cannot have (how this teacher could get them)."""

    def __init__(self, name: str, rng, dim: int, domains: list[Domain] | None,
                 means: torch.Tensor, sds: torch.Tensor, source: str, remedy: str = ""):
        def missing(name: str) -> bool:
            keys = ["correlation"] if name == "correlated" else ["copula", "quantiles"]
            return domains is None or any(getattr(d, k) is None for d in domains for k in keys)

        if name == "auto":
            name = "gaussian" if missing("copula") else "copula"
            log.info("prior=auto: %s%s", name, " (the teacher carries no input statistics)"
                     if name == "gaussian" else "")
        self.name, self.rng, self.dim = name, rng, dim
        if name == "gaussian":
            return
        key = "correlation" if name == "correlated" else "copula"
        if missing(name):
            raise UserError(f"prior={name} needs the teacher's input statistics ({key}"
                            f"{' and quantiles' if name == 'copula' else ''}), which {source} "
                            f"does not carry; use prior=gaussian{remedy}")
        self.root = _square_root([getattr(d, key) for d in domains], rng.device).transpose(1, 2)
        if name == "copula":
            q = torch.tensor([d.quantiles for d in domains], dtype=torch.float32,
                             device=rng.device)  # (K, d, Q), raw
            self.levels = q.shape[-1]
            # standardised and flat, (K, d Q): one gather of a batch's (n, d) knots per member
            self.quantiles = ((q - means.unsqueeze(2)) / sds.unsqueeze(2)).flatten(1)
            self.offsets = torch.arange(dim, device=rng.device) * self.levels

    def drawing_from(self, rng) -> "Prior":
        """The same prior drawing from another random stream (selection=fidelity's fixed set),
        without computing its square root again."""
        other = copy.copy(self)
        other.rng = rng
        return other

    def __call__(self, n: int) -> torch.Tensor:
        z = self.rng.randn(n, self.dim)
        if self.name == "gaussian":
            return z
        g = torch.bmm(z, self.root)
        if self.name == "correlated":
            return g
        pos = torch.special.ndtr(g) * (self.levels - 1)
        left = pos.floor().clamp(0, self.levels - 2)
        knot = (left.long() + self.offsets).flatten(1)  # feature j's knot in the flat table
        lo = self.quantiles.gather(1, knot).view_as(g)
        hi = self.quantiles.gather(1, knot + 1).view_as(g)
        return torch.lerp(lo, hi, pos - left)
