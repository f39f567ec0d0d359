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

A CSV spec has one row per feature and any of the columns feature, mean, sd, low, high. Without
mean and sd the teacher's inputs are taken as already standardised (mean 0, sd 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf

from dfkd_cli.data import Scaler
from dfkd_cli.errors import UserError, first_line

log = logging.getLogger(__name__)

PRIOR_DRAWS = 10_000
PRIOR_SEED = 0  # the output scaler is the same for every run seed
CSV_COLUMNS = {"feature": "features", "mean": "mean", "sd": "sd", "low": "low", "high": "high"}


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


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"teacher.spec={path} not found")
    if path.suffix.lower() == ".csv":
        try:
            frame = pd.read_csv(path)
        except Exception as exc:  # pandas raises many types for unreadable files
            raise UserError(f"teacher.spec={path} could not be read as CSV: "
                            f"{first_line(exc)}") from exc
        unknown = sorted(set(frame.columns) - set(CSV_COLUMNS))
        if unknown:
            raise UserError(f"teacher.spec={path} has unknown columns {unknown}; valid columns "
                            f"are {list(CSV_COLUMNS)}")
        return {CSV_COLUMNS[c]: frame[c].tolist() for c in frame.columns}
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            values = OmegaConf.to_container(OmegaConf.load(path)) or {}
        except Exception as exc:  # yaml's parser and scanner errors, OmegaConf's own
            raise UserError(f"teacher.spec={path} is not valid YAML: "
                            f"{' '.join(str(exc).split())}") from exc
        valid = [f.name for f in fields(Spec)]
        if not isinstance(values, dict) or set(values) - set(valid):
            raise UserError(f"teacher.spec={path}: expected a mapping with keys from {valid}")
        return values
    raise UserError(f"teacher.spec={path}: expected a .yaml, .yml or .csv file")


def from_file(path: Path) -> Spec:
    """A spec file alone (a YAML or CSV file as above)."""
    return Spec(**{k: (None if v is None else list(v)) for k, v in _read_file(path).items()})


def read(teacher_cfg) -> Spec:
    """The spec from teacher.spec (a file) and the inline teacher.<key> values."""
    values = _read_file(Path(teacher_cfg.spec)) if teacher_cfg.spec else {}
    for f in fields(Spec):
        inline = teacher_cfg.get(f.name)
        if inline is not None:
            values[f.name] = list(inline)
    spec = Spec(**{k: (None if v is None else list(v)) for k, v in values.items()})
    if spec.sd is not None and any(s <= 0 for s in spec.sd):
        raise UserError(f"teacher.sd={spec.sd} is not valid: every sd must be > 0")
    if (spec.low is None) != (spec.high is None):
        raise UserError("the teacher spec needs both low and high, or neither")
    return spec


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
