"""What a teacher knows about its inputs: a domain per feature, a prior and a projection.

A domain is plain metadata (never rows), in raw units, carried by the teacher checkpoint
(`input_spec.domain`, inferred by `dfkd train-teacher` from its training rows) or declared in a
foreign teacher's spec:

  kinds        per feature: continuous | integer | categorical (integer codes, `levels`) | binary
               (two levels)
  low, high    per-feature bounds (+-inf when unbounded)
  levels       per feature, the sorted values a categorical / binary feature takes (else None)
  simplex      groups of >= 2 non-negative features that sum to a constant `total`
  onehot       groups of >= 2 binary 0/1 features of which exactly one is 1 (a one-hot
               encoded category)
  quantiles    optional (d, QUANTILES) marginal quantiles at probabilities 0, 1/63, ..., 1
  correlation  optional (d, d) correlation of the standardised inputs
  copula       optional (d, d) correlation of the normal scores (ranks -> Phi^-1), the Gaussian
               copula's parameter

DeepInversion uses what a classifier's BatchNorm layers remember about its inputs; this is the
tabular analogue. Strategies never see it: a `Prior` draws x_p in the teacher's standardised space
and a `Projection` maps every sample the teacher labels onto the domain (the student loop calls it
once per step, on [x_g; x_p]).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dfkd_cli.errors import UserError

log = logging.getLogger(__name__)

KINDS = ("continuous", "integer", "categorical", "binary")
PRIORS = ("auto", "gaussian", "correlated", "copula")
CATEGORICAL_MAX_LEVELS = 10  # an integer feature with at most this many values is categorical
QUANTILES = 64
INTEGER_TOL = 1e-9


@dataclass
class Domain:
    """Per-feature input domain in raw units; see the module docstring."""

    kinds: list[str]
    low: list[float]
    high: list[float]
    levels: list[list[float] | None]
    simplex: list[dict[str, Any]] = field(default_factory=list)  # {"features": [i..], "total"}
    onehot: list[list[int]] = field(default_factory=list)
    quantiles: list[list[float]] | None = None
    correlation: list[list[float]] | None = None
    copula: list[list[float]] | None = None

    @classmethod
    def continuous(cls, dim: int, low: list[float] | None = None,
                   high: list[float] | None = None) -> "Domain":
        """Every feature continuous, within [low, high] (unbounded when not given)."""
        return cls(["continuous"] * dim, list(low) if low is not None else [-np.inf] * dim,
                   list(high) if high is not None else [np.inf] * dim, [None] * dim)

    @property
    def dim(self) -> int:
        return len(self.kinds)

    def payload(self) -> dict[str, Any]:
        """Plain lists, numbers and strings for a checkpoint (weights-only loadable)."""
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Domain":
        return cls(**payload)

    def summary(self, features: list[str]) -> str:
        """One line for the log: the features of each non-continuous kind, and the groups."""
        parts = [f"{kind}: {', '.join(f for f, k in zip(features, self.kinds) if k == kind)}"
                 for kind in KINDS[1:] if kind in self.kinds]
        parts += [f"simplex (sum {g['total']:g}): {', '.join(features[i] for i in g['features'])}"
                  for g in self.simplex]
        parts += [f"one-hot: {', '.join(features[i] for i in g)}" for g in self.onehot]
        return "; ".join(parts) or "all continuous"

    def check(self, features: list[str], source: str) -> "Domain":
        """Raise a one-line UserError for an inconsistent domain; return it when valid."""
        def name(i: int) -> str:
            return features[i] if i < len(features) else f"#{i}"
        for i, kind in enumerate(self.kinds):
            if kind not in KINDS:
                raise UserError(f"{source}: feature {name(i)} has unknown type {kind!r}; "
                                f"valid types are {', '.join(KINDS)}")
            if self.low[i] > self.high[i]:
                raise UserError(f"{source}: feature {name(i)} has low {self.low[i]} > high "
                                f"{self.high[i]}")
            if kind == "integer" and np.ceil(self.low[i]) > np.floor(self.high[i]):
                raise UserError(f"{source}: integer feature {name(i)} has no integer within its "
                                f"bounds [{self.low[i]}, {self.high[i]}]")
            levels = self.levels[i]
            if kind in ("categorical", "binary"):
                want = 2 if kind == "binary" else None
                if not levels or (want and len(levels) != want):
                    raise UserError(f"{source}: {kind} feature {name(i)} needs "
                                    f"{'exactly 2' if want else 'its'} levels; got {levels}")
                outside = [v for v in levels if not self.low[i] <= v <= self.high[i]]
                if outside:
                    raise UserError(f"{source}: feature {name(i)} has levels {outside} outside "
                                    f"its bounds [{self.low[i]}, {self.high[i]}]")
            elif levels is not None:
                raise UserError(f"{source}: feature {name(i)} is {kind} and cannot have levels "
                                "(levels are for categorical and binary features)")
        seen: set[int] = set()
        for kind, group in ([("simplex", g) for g in self.simplex]
                            + [("one-hot", {"features": g, "total": 1.0}) for g in self.onehot]):
            members = list(group["features"])
            shown = [name(i) for i in members]
            if len(members) < 2:
                raise UserError(f"{source}: a {kind} group needs at least 2 features; got "
                                f"{shown}")
            if seen & set(members) or len(set(members)) < len(members):
                raise UserError(f"{source}: feature(s) {shown} appear in more than one place in "
                                "the simplex and one-hot groups")
            seen |= set(members)
            if kind == "one-hot":
                if any(self.levels[i] != [0.0, 1.0] for i in members):
                    raise UserError(f"{source}: one-hot group {shown} must hold binary features "
                                    "with levels [0, 1]")
                continue
            if not group["total"] > 0:
                raise UserError(f"{source}: simplex group {shown} has total {group['total']}; "
                                "it must be > 0")
            if any(self.kinds[i] != "continuous" for i in members):
                raise UserError(f"{source}: simplex group {shown} must hold continuous features")
        return self


def _normal_scores(x: np.ndarray) -> np.ndarray:
    """Phi^-1 of each column's mid-ranks (ties share their average rank)."""
    ranks = pd.DataFrame(x).rank(method="average").to_numpy()
    u = torch.tensor((ranks - 0.5) / len(x), dtype=torch.float64)
    return torch.special.ndtri(u).numpy()


def _correlation(x: np.ndarray) -> list[list[float]]:
    """Pearson correlation of the columns; a constant column is uncorrelated with the rest."""
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    c = z.T @ z / len(x)
    c[np.diag_indices_from(c)] = 1.0
    return c.tolist()


def _simplex_groups(x: np.ndarray) -> list[dict[str, Any]]:
    """Groups of >= 2 non-negative columns whose row sums are constant.

    A group g with indicator vector v has (X - mean) v = 0, so v lies in the null space of the
    centred rows (up to a CSV's rounding: singular values below 1e-6 of the largest). In any
    basis B of that space a feature's row of B is the same for all the features of one group
    (it is the group's row of the change of basis); so features are grouped by equal rows of B, and each candidate group is then checked on the rows directly."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    null = vt[s <= s[0] * 1e-6].T if len(s) and s[0] > 0 else np.zeros((x.shape[1], 0))
    if null.shape[1] == 0:
        return []
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(np.round(null / np.abs(null).max(), 6)):
        if np.abs(row).max() > 1e-6:
            groups.setdefault(tuple(row), []).append(i)
    found = []
    for members in groups.values():
        sums = x[:, members].sum(axis=1)
        total = float(np.median(sums))
        if (len(members) >= 2 and (x[:, members] >= 0).all() and total > 0
                and np.abs(sums - total).max() <= 1e-6 * total):
            found.append({"features": members, "total": total})
    return found


def infer(x: np.ndarray, with_statistics: bool = True) -> Domain:
    """The domain of the rows `x` (n, d), raw units: a feature whose values are all integers is
    binary (2 values), categorical (at most CATEGORICAL_MAX_LEVELS values; its levels) or
    integer; any other feature is continuous. Bounds are the rows' min and max; simplex groups
    are the sets of non-negative features with a constant sum. With `with_statistics`, also the
    marginal quantiles and the two correlations (summaries, never rows)."""
    x = np.asarray(x, dtype=np.float64)
    kinds, levels = [], []
    for column in x.T:
        values = np.unique(column)
        integer = bool(np.all(np.abs(values - np.round(values)) <= INTEGER_TOL))
        if len(values) == 2:
            kinds.append("binary")
        elif integer and len(values) <= CATEGORICAL_MAX_LEVELS and len(values) > 1:
            kinds.append("categorical")
        else:
            kinds.append("integer" if integer else "continuous")
        levels.append(values.tolist() if kinds[-1] in ("binary", "categorical") else None)
    domain = Domain(kinds, x.min(axis=0).tolist(), x.max(axis=0).tolist(), levels)
    groups = _simplex_groups(x)
    domain.simplex = [g for g in groups if all(kinds[i] == "continuous" for i in g["features"])]
    domain.onehot = [g["features"] for g in groups if g["total"] == 1
                     and all(levels[i] == [0.0, 1.0] for i in g["features"])]
    if with_statistics:
        domain.quantiles = np.quantile(x, np.linspace(0, 1, QUANTILES), axis=0).T.tolist()
        domain.correlation = _correlation(x)
        domain.copula = _correlation(_normal_scores(x))
    return domain


def override(domain: Domain, values: dict[str, Any], features: list[str],
             source: str) -> Domain:
    """`domain` with the spec keys `values` applied (see teacher_spec: `type`, `levels`,
    `low`, `high`, `simplex`, `onehot`; the features of a one-hot group become binary 0 / 1);
    checked."""
    index = {f: i for i, f in enumerate(features)}

    def position(key: Any) -> int:
        if isinstance(key, int) and 0 <= key < len(features):
            return key
        if key in index:
            return index[key]
        raise UserError(f"{source}: unknown feature {key!r}; features are {features}")

    def per_feature(key: str) -> dict[int, Any]:
        value = values.get(key)
        if value is None:
            return {}
        if isinstance(value, dict):
            return {position(k): v for k, v in value.items()}
        if len(value) != len(features):
            raise UserError(f"{source}: `{key}` has {len(value)} entries for {len(features)} "
                            "features (give a list per feature or a mapping feature: value)")
        return {i: v for i, v in enumerate(value) if v is not None and v == v}

    out = Domain(**{k: (list(v) if isinstance(v, list) else v)
                    for k, v in domain.__dict__.items()})
    for i, kind in per_feature("type").items():
        out.kinds[i] = str(kind)
        if out.kinds[i] not in ("categorical", "binary"):
            out.levels[i] = None
    for i, lv in per_feature("levels").items():
        out.levels[i] = sorted(float(v) for v in lv)
    for key in ("low", "high"):
        for i, v in per_feature(key).items():
            getattr(out, key)[i] = float(v)
    if values.get("simplex") is not None:
        groups = []
        for group in values["simplex"]:
            spec = group if isinstance(group, dict) else {"features": group}
            groups.append({"features": [position(f) for f in spec["features"]],
                           "total": float(spec.get("total", 1.0))})
        out.simplex = groups
    if values.get("onehot") is not None:
        out.onehot = [[position(f) for f in group] for group in values["onehot"]]
        for i in (i for group in out.onehot for i in group):
            out.kinds[i], out.levels[i] = "binary", [0.0, 1.0]
    return out.check(features, source)


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
    `auto` is copula for a teacher that carries the statistics, else gaussian (logged)."""

    def __init__(self, name: str, rng, dim: int, domains: list[Domain] | None,
                 means: torch.Tensor, sds: torch.Tensor, source: str):
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
                            "does not carry (a teacher from an older dfkd, or from elsewhere); "
                            "use prior=gaussian, or retrain it with dfkd train-teacher "
                            "overwrite=true")
        self.root = _square_root([getattr(d, key) for d in domains], rng.device).transpose(1, 2)
        if name == "copula":
            q = torch.tensor([d.quantiles for d in domains], dtype=torch.float32,
                             device=rng.device)  # (K, d, Q), raw
            self.quantiles = ((q - means.unsqueeze(2)) / sds.unsqueeze(2)).unsqueeze(1)

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
        pos = torch.special.ndtr(g) * (self.quantiles.shape[-1] - 1)
        left = pos.floor().clamp(0, self.quantiles.shape[-1] - 2)
        q = self.quantiles.expand(*g.shape, -1)
        lo = q.gather(-1, left.long().unsqueeze(-1)).squeeze(-1)
        hi = q.gather(-1, left.long().unsqueeze(-1) + 1).squeeze(-1)
        return torch.lerp(lo, hi, pos - left)
