"""The spec of a teacher from elsewhere: what its raw inputs and outputs look like.

dfkd works in a standardised space where N(0, I) is the prior. A dfkd teacher carries its scalers;
a TorchScript / torch.export / ONNX teacher takes raw features, so the user may say what they
look like, inline (`teacher.mean=[...]`) or in a file (`teacher.spec=spec.yaml` or `.csv`;
inline keys win):

  features     feature names, in the teacher's input order
  mean, sd     per-feature scaler: a prior draw z becomes the raw input mean + sd * z
  low, high    per-feature box in raw units (for uniform, lhs, sobol, evolution, clip_to_box)
  targets      output names
  target_mean, target_sd
               per-output scaler; when absent, the mean and sd of the teacher's outputs on
               `PRIOR_DRAWS` prior draws (data-free), so the student's loss is on unit scale

The input domain (dfkd_cli/data/domains.py), all optional (default: continuous, within low / high):

  type         per feature (a list, or a mapping feature: type): continuous, integer,
               categorical or binary
  levels       a mapping feature: [values] (or a list per feature) for categorical / binary
  simplex      groups of non-negative features that sum to a constant: [[a, b, c], ...] or
               [{features: [a, b, c], total: 100}, ...] (total 1 when not given)
  onehot       groups of 0 / 1 features of which exactly one is 1: [[red, green, blue], ...]

A CSV spec has one row per feature and any of the columns feature, mean, sd, low, high, type,
levels (values separated by `;`), simplex (a group name; the rows sharing it form a group),
simplex_total and onehot (a group name). Without mean and sd the teacher's inputs are taken as already standardised (mean
0, sd 1). The same file format (domain keys only) overrides an inferred domain: `domain_spec=`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf

from dfkd_cli.data import domains
from dfkd_cli.data.datasets import Scaler
from dfkd_cli.errors import UserError, reason

log = logging.getLogger(__name__)

PRIOR_DRAWS = 10_000
PRIOR_SEED = 0  # the output scaler is the same for every run seed
CSV_COLUMNS = {"feature": "features", "mean": "mean", "sd": "sd", "low": "low", "high": "high",
               "type": "type", "levels": "levels", "simplex": "simplex",
               "simplex_total": "simplex_total", "onehot": "onehot"}
DOMAIN_KEYS = ("type", "levels", "simplex", "onehot")  # a list per feature or a mapping feature: value


@dataclass
class Spec:
    features: list[str] | None = None
    mean: list[float] | None = None
    sd: list[float] | None = None
    low: list[float] | None = None
    high: list[float] | None = None
    targets: list[str] | None = None
    target_mean: list[float] | None = None
    target_sd: list[float] | None = None
    type: Any = None
    levels: Any = None
    simplex: list[Any] | None = None
    onehot: list[Any] | None = None

    def input_dim(self) -> int | None:
        """The number of features any per-feature key implies (consistent, else a UserError)."""
        sizes = {key: len(getattr(self, key)) for key in ("features", "mean", "sd", "low", "high")
                 if getattr(self, key) is not None}
        if len(set(sizes.values())) > 1:
            raise UserError(f"the teacher spec's per-feature keys differ in length: {sizes}")
        return next(iter(sizes.values()), None)

    def output_dim(self) -> int | None:
        sizes = {key: len(getattr(self, key)) for key in ("targets", "target_mean", "target_sd")
                 if getattr(self, key) is not None}
        if len(set(sizes.values())) > 1:
            raise UserError(f"the teacher spec's per-output keys differ in length: {sizes}")
        return next(iter(sizes.values()), None)


def _read_file(path: Path, key: str = "teacher.spec") -> dict[str, Any]:
    """A spec file's keys; errors name the file by `key` (teacher.spec or domain_spec)."""
    if not path.is_file():
        raise UserError(f"{key}={path} not found")
    if path.suffix.lower() == ".csv":
        try:
            frame = pd.read_csv(path)
        except Exception as exc:  # pandas raises many types for unreadable files
            raise UserError(f"{key}={path} could not be read as CSV: "
                            f"{reason(exc)}") from exc
        unknown = sorted(set(frame.columns) - set(CSV_COLUMNS))
        if unknown:
            raise UserError(f"{key}={path} has unknown columns {unknown}; valid columns "
                            f"are {list(CSV_COLUMNS)}")
        return _csv_values(frame)
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            values = OmegaConf.to_container(OmegaConf.load(path)) or {}
        except Exception as exc:  # yaml's parser and scanner errors, OmegaConf's own
            raise UserError(f"{key}={path} is not valid YAML: "
                            f"{' '.join(str(exc).split())}") from exc
        valid = [f.name for f in fields(Spec)]
        if not isinstance(values, dict) or set(values) - set(valid):
            raise UserError(f"{key}={path}: expected a mapping with keys from {valid}")
        return values
    raise UserError(f"{key}={path}: expected a .yaml, .yml or .csv file")


def _csv_values(frame: pd.DataFrame) -> dict[str, Any]:
    """A CSV spec's columns as spec keys: per-feature lists, except the domain keys, which are
    mappings feature: value (only the rows that give one) and simplex groups."""
    values = {CSV_COLUMNS[c]: frame[c].tolist() for c in ("feature", "mean", "sd", "low", "high")
              if c in frame.columns}
    names = frame["feature"].tolist() if "feature" in frame.columns else list(range(len(frame)))
    given = {c: [(n, v) for n, v in zip(names, frame[c]) if not pd.isna(v)]
             for c in ("type", "levels", "simplex", "simplex_total", "onehot")
             if c in frame.columns}
    if "type" in given:
        values["type"] = {n: str(v).strip() for n, v in given["type"]}
    if "levels" in given:
        try:
            values["levels"] = {n: [float(x) for x in str(v).split(";")]
                                for n, v in given["levels"]}
        except ValueError as exc:
            raise UserError(f"the spec's levels column: {exc}; write levels as numbers "
                            "separated by ';' (e.g. 0;1;2)") from exc
    if "simplex" in given:
        totals = dict(given.get("simplex_total", []))
        groups: dict[str, dict[str, Any]] = {}
        for n, label in given["simplex"]:
            group = groups.setdefault(str(label), {"features": [], "total": 1.0})
            group["features"].append(n)
            group["total"] = float(totals.get(n, group["total"]))
        values["simplex"] = list(groups.values())
    if "onehot" in given:
        hot: dict[str, list[Any]] = {}
        for n, label in given["onehot"]:
            hot.setdefault(str(label), []).append(n)
        values["onehot"] = list(hot.values())
    return values


def domain_values(path: str) -> dict[str, Any]:
    """The domain keys (type, levels, low, high, simplex, onehot) of a spec file, keyed by feature name
    where the file names its features (so it may describe only some of them)."""
    values = _read_file(Path(path), "domain_spec")
    names = values.get("features")
    for key in ("low", "high"):
        if names is not None and isinstance(values.get(key), list):
            values[key] = dict(zip(names, values[key]))
    return {k: v for k, v in values.items() if k in (*DOMAIN_KEYS, "low", "high")}


def domain(spec: Spec, dim: int, source: str) -> domains.Domain:
    """The raw-unit domain a foreign teacher's spec declares: continuous within low / high
    unless the spec's type / levels / simplex / onehot say otherwise."""
    base = domains.Domain.continuous(dim, spec.low, spec.high)
    features = spec.features or [f"x{i + 1}" for i in range(dim)]
    values = {k: getattr(spec, k) for k in DOMAIN_KEYS}
    return domains.override(base, values, features, source)


def domain_keys(found: domains.Domain, features: list[str]) -> dict[str, Any]:
    """A domain as the keys of a spec file (the inverse of `domain`): low, high, the per-feature
    type, the levels of categorical and binary features and the simplex and one-hot groups, by
    feature name."""
    return {"low": list(found.low), "high": list(found.high), "type": list(found.kinds),
            "levels": {features[i]: list(v) for i, v in enumerate(found.levels)
                       if v is not None},
            "simplex": [{"features": [features[i] for i in g["features"]], "total": g["total"]}
                        for g in found.simplex],
            "onehot": [[features[i] for i in g] for g in found.onehot]}


def _spec(values: dict[str, Any]) -> Spec:
    """A Spec from key -> value: per-feature and per-output keys as lists, the domain keys as
    given (lists or mappings)."""
    for k, v in values.items():
        if k not in DOMAIN_KEYS and v is not None and not isinstance(v, (list, tuple)):
            raise UserError(f"teacher.{k}={v!r} is not valid: expected a list, one entry per "
                            f"{'output' if k.startswith('target') else 'feature'}")
    return Spec(**{k: (v if v is None or k in DOMAIN_KEYS else list(v))
                   for k, v in values.items()})


def from_file(path: Path) -> Spec:
    """A spec file alone (a YAML or CSV file as above)."""
    return _spec(_read_file(path))


def read(teacher_cfg) -> Spec:
    """The spec from teacher.spec (a file) and the inline teacher.<key> values."""
    values = _read_file(Path(teacher_cfg.spec)) if teacher_cfg.spec else {}
    for f in fields(Spec):
        inline = None if f.name in DOMAIN_KEYS else teacher_cfg.get(f.name)
        if inline is not None:
            values[f.name] = list(inline)
    spec = _spec(values)
    for key in ("mean", "sd", "low", "high", "target_mean", "target_sd"):
        _check_numbers(spec, key)
    if (spec.low is None) != (spec.high is None):
        raise UserError("the teacher spec needs both low and high, or neither")
    return spec


def _check_numbers(spec: Spec, key: str) -> None:
    """A per-feature or per-output key holds numbers: no NaN, finite means, sd > 0 (bounds may
    be infinite, for an unbounded feature)."""
    values = getattr(spec, key)
    if values is None:
        return
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    ok = len(numbers) == len(values) and not any(math.isnan(v) for v in numbers)
    if key in ("mean", "target_mean", "sd", "target_sd"):
        ok = ok and all(math.isfinite(v) for v in numbers)
    if key in ("sd", "target_sd"):
        ok = ok and all(v > 0 for v in numbers)
    if not ok:
        need = {"sd": "finite numbers > 0", "target_sd": "finite numbers > 0",
                "mean": "finite numbers", "target_mean": "finite numbers"}.get(
                    key, "numbers, not NaN (+-inf for no bound)")
        raise UserError(f"teacher.{key}={values} is not valid: expected {need}")


def input_scaler(spec: Spec, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sd) of the teacher's raw inputs, (d,) each: identity when the spec has none."""
    mean = torch.tensor(spec.mean if spec.mean is not None else [0.0] * dim)
    sd = torch.tensor(spec.sd if spec.sd is not None else [1.0] * dim)
    return mean.float(), sd.float()


def box(spec: Spec, scaler: Scaler) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The per-feature box in standardised units, or None when the spec has none."""
    if spec.low is None:
        return None
    low, high = (scaler.standardise_x(torch.tensor(v, dtype=torch.float32))
                 for v in (spec.low, spec.high))
    if (low > high).any():
        raise UserError("the teacher spec has low > high for some features")
    return low, high


@torch.no_grad()
def output_scaler(spec: Spec, raw_net, mean: torch.Tensor, sd: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sd) of the teacher's outputs: from the spec, else estimated on prior draws."""
    if spec.target_mean is not None and spec.target_sd is not None:
        return (torch.tensor(spec.target_mean, dtype=torch.float32),
                torch.tensor(spec.target_sd, dtype=torch.float32))
    z = torch.randn(PRIOR_DRAWS, len(mean), generator=torch.Generator().manual_seed(PRIOR_SEED))
    y = raw_net(mean + sd * z).double()
    y_mean, y_sd = y.mean(dim=0), y.std(dim=0)
    y_sd[~(y_sd > 0)] = 1.0
    if spec.target_mean is not None:
        y_mean = torch.tensor(spec.target_mean, dtype=torch.float64)
    if spec.target_sd is not None:
        y_sd = torch.tensor(spec.target_sd, dtype=torch.float64)
    log.info("teacher outputs standardised with mean %s and sd %s (estimated on %d prior draws; "
             "set teacher.target_mean / teacher.target_sd to fix them)",
             y_mean.tolist(), y_sd.tolist(), PRIOR_DRAWS)
    return y_mean.float(), y_sd.float()
