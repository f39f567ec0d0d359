"""What a teacher knows about its inputs: a domain per feature, inferred from rows or declared.

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
tabular analogue. Strategies never see it: a `Prior` (data/priors.py) draws x_p in the teacher's standardised space
and a `Projection` (data/projection.py) maps every sample the teacher labels onto the domain (the student loop calls it
once per step, on [x_g; x_p]).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from dfkd_cli.errors import UserError
from dfkd_cli.utils.files import atomic_path

log = logging.getLogger(__name__)

KINDS = ("continuous", "integer", "categorical", "binary")
CATEGORICAL_MAX_LEVELS = 10  # an integer feature with at most this many values is categorical
QUANTILES = 64
SHOWN = 3  # names per kind in the log line
FILE = "input_domain.yaml"  # in each member's run directory
INTEGER_TOL = 1e-9
STATISTICS = ("quantiles", "correlation", "copula")
MATRIX_TOL = 1e-6  # symmetry and unit diagonal of a stored correlation (rounding in a file)
PSD_TOL = 1e-4  # its smallest eigenvalue may be this far below 0 (a file's rounded digits)


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
        """Plain lists, numbers and strings for a checkpoint (weights-only loadable); the
        statistics as float64 tensors, which a wide domain's checkpoint saves and loads in
        milliseconds (as lists, 500 features took seconds: docs/performance.md)."""
        return {k: torch.tensor(v, dtype=torch.float64) if k in STATISTICS and v is not None
                else v for k, v in self.__dict__.items()}

    @classmethod
    def from_payload(cls, payload: Any, source: str = "the checkpoint") -> "Domain":
        """A domain read back from a file: its keys are checked, never trusted."""
        known = {f.name for f in fields(cls)}
        if not isinstance(payload, dict) or set(payload) - known or not {
                "kinds", "low", "high", "levels"} <= set(payload):
            keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise UserError(f"{source} has a damaged input domain (keys {keys}; a domain has "
                            f"{sorted(known)})")
        return cls(**{k: v.tolist() if k in STATISTICS and torch.is_tensor(v) else v
                      for k, v in payload.items()})

    def summary(self, features: list[str]) -> str:
        """One short line for the log, whatever the width: the count of each kind with its first
        names, and the groups (`records` has every feature)."""
        def some(names: list[str]) -> str:
            return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")

        parts = [f"{len(names)} {kind} ({some(names)})" for kind in KINDS[1:]
                 if (names := [f for f, k in zip(features, self.kinds) if k == kind])]
        parts += [f"simplex of {len(g['features'])} summing to {g['total']:g} "
                  f"({some([features[i] for i in g['features']])})" for g in self.simplex[:SHOWN]]
        if self.onehot:
            parts.append(f"{len(self.onehot)} one-hot group(s) "
                         f"({some([features[g[0]] for g in self.onehot])}, ...)")
        continuous = self.kinds.count("continuous")
        return f"{self.dim} features, {continuous} continuous" + "".join(f"; {p}" for p in parts)

    def records(self, features: list[str]) -> dict[str, Any]:
        """The whole domain by feature name (the run directory's input_domain.yaml)."""
        rows = [{"name": f, "kind": k, "low": lo, "high": hi}
                | ({"levels": lv} if lv is not None else {})
                for f, k, lo, hi, lv in zip(features, self.kinds, self.low, self.high, self.levels)]
        return {"features": rows,
                "simplex": [{"features": [features[i] for i in g["features"]],
                             "total": g["total"]} for g in self.simplex],
                "onehot": [[features[i] for i in g] for g in self.onehot]}

    def check(self, features: list[str], source: str) -> "Domain":
        """Raise a one-line UserError for an inconsistent domain; return it when valid."""
        def name(i: int) -> str:
            return features[i] if i < len(features) else f"#{i}"
        for i, kind in enumerate(self.kinds):
            if kind not in KINDS:
                raise UserError(f"{source}: feature {name(i)} has unknown type {kind!r}; "
                                f"valid types are {', '.join(KINDS)}")
            if np.isnan(self.low[i]) or np.isnan(self.high[i]):
                raise UserError(f"{source}: feature {name(i)} has a NaN bound (low "
                                f"{self.low[i]}, high {self.high[i]}); use .inf for no bound")
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
        for key in STATISTICS:
            check_statistic(key, getattr(self, key), [name(i) for i in range(self.dim)], source)
        return self


def check_statistic(key: str, value: Any, features: list[str], source: str) -> None:
    """A stored input statistic (`quantiles`, `correlation` or `copula`; None: absent) is what
    the priors need, else a one-line UserError naming it: quantiles a (d, QUANTILES) matrix,
    finite and non-decreasing per feature; a correlation a (d, d) finite symmetric matrix with
    unit diagonal, positive semi-definite within PSD_TOL."""
    if value is None:
        return
    dim = len(features)
    shape = (dim, QUANTILES) if key == "quantiles" else (dim, dim)
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.shape != shape:
        raise UserError(f"{source}: `{key}` must be a {shape[0]} x {shape[1]} matrix of numbers "
                        f"(a list of {shape[0]} rows of {shape[1]}; got "
                        f"{'something else' if m is None else ' x '.join(map(str, m.shape))})")
    if not np.isfinite(m).all():
        raise UserError(f"{source}: `{key}` has non-finite entries (NaN or inf)")
    if key == "quantiles":
        falls = np.flatnonzero((np.diff(m, axis=1) < 0).any(axis=1))
        if len(falls):
            raise UserError(f"{source}: `quantiles` of feature {features[falls[0]]} decrease; each "
                            "feature's quantiles must be non-decreasing")
        return
    if np.abs(m - m.T).max() > MATRIX_TOL:
        raise UserError(f"{source}: `{key}` is not symmetric (max |C - C^T| "
                        f"{np.abs(m - m.T).max():.3g})")
    if np.abs(np.diag(m) - 1).max() > MATRIX_TOL:
        raise UserError(f"{source}: `{key}` must have a unit diagonal (a correlation matrix)")
    smallest = float(np.linalg.eigvalsh((m + m.T) / 2).min())
    if smallest < -PSD_TOL:
        raise UserError(f"{source}: `{key}` is not positive semi-definite (smallest eigenvalue "
                        f"{smallest:.3g}), so it is no correlation matrix")


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
    def number(value: Any, what: str) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: {what} is {value!r}, not a number") from None

    for i, lv in per_feature("levels").items():
        if not isinstance(lv, (list, tuple)):
            raise UserError(f"{source}: the levels of feature {features[i]} are {lv!r}, not a "
                            "list of numbers")
        out.levels[i] = sorted(number(v, f"a level of feature {features[i]}") for v in lv)
    for key in ("low", "high"):
        for i, v in per_feature(key).items():
            getattr(out, key)[i] = number(v, f"`{key}` of feature {features[i]}")
    if values.get("simplex") is not None:
        groups = []
        for group in values["simplex"]:
            spec = group if isinstance(group, dict) else {"features": group}
            if not isinstance(spec.get("features"), (list, tuple)):
                raise UserError(f"{source}: a simplex entry needs `features`, a list of feature "
                                f"names (got {group!r})")
            groups.append({"features": [position(f) for f in spec["features"]],
                           "total": number(spec.get("total", 1.0), "a simplex total")})
        out.simplex = groups
    if values.get("onehot") is not None:
        out.onehot = [[position(f) for f in group] for group in values["onehot"]]
        for i in (i for group in out.onehot for i in group):
            out.kinds[i], out.levels[i] = "binary", [0.0, 1.0]
    return out.check(features, source)


def write(dirs: list[Path], found: list[Domain], features: list[str]) -> None:
    """Each member's whole domain into <its directory>/input_domain.yaml (atomically)."""
    for directory, domain in zip(dirs, found):
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / FILE) as tmp:
            tmp.write_text(yaml.safe_dump(domain.records(features), sort_keys=False))
    # named from the run directory, where the log is (a population's members are seed<N>/)
    log.info("the whole input domain: %s", FILE if len(dirs) == 1 else
             f"{dirs[0].name}/{FILE} (each member's in its folder)")
