"""The projection of standardised inputs onto a teacher's input domain (data/domains.py): one-hot
groups, simplex groups, bounds, integers and levels, in raw units, tensor ops only. The student
loop calls it once per step on [x_g; x_p] when `domain=on`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dfkd_cli.data.domains import Domain


def _stack(rows: list[Any], device: torch.device) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, device=device)


def project_simplex(v: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of v (..., g) onto {x >= 0, sum x = total} (Duchi et
    al. 2008, the sort-based algorithm); `total` broadcasts against v's leading dimensions."""
    u = v.sort(dim=-1, descending=True).values
    excess = u.cumsum(dim=-1) - total.unsqueeze(-1)
    ranks = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    active = (u - excess / ranks) > 0  # true for a prefix of the sorted coordinates
    rho = active.sum(dim=-1, keepdim=True).clamp(min=1)
    theta = excess.gather(-1, rho - 1) / rho
    return (v - theta).clamp(min=0)


class Projection:
    """Maps standardised inputs (K, n, d) onto each member's domain: one-hot groups set to the
    one-hot vector of their largest coordinate, simplex groups projected,
    bounds clipped, integers rounded (within the bounds), categorical and binary features
    snapped to their nearest level; all in raw units, tensor ops only."""

    def __init__(self, domains: list[Domain], means: torch.Tensor, sds: torch.Tensor):
        device = means.device
        self.mean, self.sd = means.unsqueeze(1), sds.unsqueeze(1)  # (K, 1, d)
        self.low = _stack([d.low for d in domains], device).unsqueeze(1)
        self.high = _stack([d.high for d in domains], device).unsqueeze(1)
        integer = _stack([[k == "integer" for k in d.kinds] for d in domains], device).bool()
        self.integer = integer.unsqueeze(1)
        self.int_low, self.int_high = self.low.ceil(), self.high.floor()
        snapped = [[k in ("categorical", "binary") for k in d.kinds] for d in domains]
        self.snap_columns = [j for j in range(domains[0].dim) if any(s[j] for s in snapped)]
        self.levels = None
        if self.snap_columns:  # (K, 1, c, L), each column padded with its last level
            width = max(len(d.levels[j] or [0.0]) for d in domains for j in self.snap_columns)
            self.levels = _stack([[(d.levels[j] or [np.nan]) + [(d.levels[j] or [np.nan])[-1]]
                                   * (width - len(d.levels[j] or [0.0]))
                                   for j in self.snap_columns] for d in domains],
                                 device).unsqueeze(1)
            self.snap_mask = _stack([[s[j] for j in self.snap_columns] for s in snapped],
                                    device).bool().unsqueeze(1)
        groups = {tuple(g["features"]) for g in domains[0].simplex}
        common = [g for g in groups
                  if all(g in {tuple(h["features"]) for h in d.simplex} for d in domains)]
        self.groups = [(list(g), _stack([[next(h["total"] for h in d.simplex
                                               if tuple(h["features"]) == g)] for d in domains],
                                        device)) for g in sorted(common)]  # totals (K, 1)
        in_group = torch.zeros(domains[0].dim, dtype=torch.bool, device=device)
        for g, _ in self.groups:
            in_group[g] = True
        self.free = ~in_group  # simplex features are bounded by their group, not clipped
        self.onehot = [g for g in domains[0].onehot if all(g in d.onehot for d in domains)]

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sd + self.mean

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.raw(x)
        for g in self.onehot:  # the largest relaxed value wins
            raw[..., g] = nn.functional.one_hot(raw[..., g].argmax(dim=-1), len(g)).to(raw.dtype)
        for g, total in self.groups:
            raw[..., g] = project_simplex(raw[..., g], total)
        raw = torch.where(self.free, torch.maximum(torch.minimum(raw, self.high), self.low), raw)
        raw = torch.where(self.integer, torch.maximum(torch.minimum(
            raw.round(), self.int_high), self.int_low), raw)
        if self.levels is not None:
            cols = raw[..., self.snap_columns]
            nearest = (cols.unsqueeze(-1) - self.levels).abs().argmin(dim=-1)
            snapped = self.levels.expand(*cols.shape, -1).gather(-1, nearest.unsqueeze(-1))
            raw[..., self.snap_columns] = torch.where(self.snap_mask, snapped.squeeze(-1), cols)
        return (raw - self.mean) / self.sd
