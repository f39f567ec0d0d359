"""`dfkd evaluate --model PATH --data FILE.csv`: RMSE, MAE and R^2 on labelled rows, in raw units.

A model is a dfkd checkpoint (student or teacher, its scalers folded in exactly as `dfkd export`
does), a TorchScript or ONNX file, or with --allow-torch-export a torch.export archive (which can
run code from the file when loaded); each maps raw features to raw targets.
The targets are `--target` columns, else those a dfkd checkpoint records, else the last k
columns for a model of k outputs. The features are the columns a checkpoint records, else every
other column but `--drop`, in the file's order. With `--teacher`, the model's row also gets the
student-teacher fidelity: the RMSE between the two models' predictions.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from dfkd_cli.errors import UserError, one_line_errors, reason
from dfkd_cli.nets import checkpoints, metrics
from dfkd_cli.teachers.model_files import KINDS, SAFE_KINDS, load_model_file
from dfkd_cli.teachers.raw_units import (
    TARGET_KEY,
    feature_names,
    network,
    raw_model,
    target_names,
)
from dfkd_cli.utils.files import write_csv

ROWS = 8192  # rows per forward pass
SCORES = {"rmse": metrics.rmse, "mae": metrics.mae, "r2": metrics.r2}


@dataclass
class Model:
    """A model of raw features -> raw targets, and what its file says about its columns."""

    path: Path
    kind: str
    module: nn.Module
    input_dim: int | None
    output_dim: int | None
    features: list[str] | None = None
    targets: list[str] | None = None


def _is_checkpoint(path: Path) -> bool:
    """True for a file torch.load reads with weights only as a dfkd checkpoint."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.load warns on a TorchScript archive
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - TorchScript, ONNX or junk: not a checkpoint
            return False
    return isinstance(payload, dict) and payload.get("format") == checkpoints.FORMAT


ALLOW_TORCH_EXPORT = "--allow-torch-export"


def load_model(path: str | Path, net_target: str | None = None,
               allow_torch_export: bool = False) -> Model:
    """A dfkd checkpoint (read with weights only; a custom network only when `net_target` names
    its class), or a TorchScript / ONNX file; a torch.export archive only with
    `allow_torch_export` (loading one can run code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model {path} not found")
    if _is_checkpoint(path):
        payload = checkpoints.load_checkpoint(path)
        arch = payload["arch"]
        network(payload, net_target, f"checkpoint {path}")  # a custom network: named? else fail
        return Model(path, "dfkd-checkpoint", raw_model(payload, net_target), arch["input_dim"],
                     arch.get("output_dim", 1), feature_names(payload), target_names(payload))
    kinds = KINDS if allow_torch_export else SAFE_KINDS
    file = load_model_file(path, kinds, f"pass {ALLOW_TORCH_EXPORT} if you trust it")
    return Model(path, file.kind, file.module, file.input_dim, file.output_dim)


@torch.no_grad()
def forward(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Predictions (n, k) in float64, ROWS rows at a time."""
    out = torch.cat([model.module(x[i:i + ROWS]) for i in range(0, len(x), ROWS)])
    return out.reshape(len(x), -1).double()


# ---------------------------------------------------------------------------------------------
# columns


def read_data(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} not found")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas, gzip (a truncated .gz: EOFError) and codecs raise many types
        raise UserError(f"{path} is not a readable CSV file: {reason(exc)}") from exc
    if frame.empty:
        raise UserError(f"{path} has no data rows")
    return frame


def numeric(frame: pd.DataFrame, columns: list[str], path: Path) -> torch.Tensor:
    """The columns as an (n, len(columns)) float64 tensor; non-numeric or missing values are a
    UserError naming the columns."""
    text = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise UserError(f"{path}: non-numeric values in column(s) {text}")
    values = frame[columns].to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        bad = [c for c, ok in zip(columns, finite.all(axis=0)) if not ok]
        rows = np.flatnonzero(~finite.all(axis=1))
        raise UserError(f"{path}: {len(rows)} row(s) with missing or infinite values in "
                        f"{bad} (the first is data row {rows[0] + 1})")
    return torch.tensor(values)


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str, path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{path} has no column(s) {missing} ({what}); its columns: "
                        f"{list(frame.columns)}")


def output_dim(model: Model, width: int) -> int:
    """The model's number of outputs; when its file does not say, one row of zeros is run
    through it (width - 1 features when its input size is unknown too)."""
    if model.output_dim is not None:
        return model.output_dim
    try:
        return forward(model, torch.zeros(1, model.input_dim or width - 1)).shape[1]
    except Exception as exc:  # noqa: BLE001 - any runtime's error: we only probe
        raise UserError(f"cannot tell how many outputs {model.path} gives ({reason(exc)}); "
                        f"name the target columns with --target") from exc


def target_columns(frame: pd.DataFrame, model: Model, teacher: Model | None,
                   targets: Sequence[str], drop: Sequence[str], path: Path) -> list[str]:
    """--target, else the targets a checkpoint records (model's, then teacher's), else the
    last k columns for a model of k outputs."""
    recorded = [(m.targets, f"targets of {m.path}") for m in (model, teacher) if m and m.targets]
    for names, what in [(targets, "--target"), *recorded]:
        if names:
            _require(frame, names, what, path)
            return list(names)
    columns = [c for c in frame.columns if c not in drop]
    k = output_dim(model, len(columns))
    if k >= len(columns):
        raise UserError(f"{path} has {len(columns)} columns, too few for {k} target(s) and the "
                        f"features of {model.path}")
    return columns[-k:]


def feature_columns(frame: pd.DataFrame, model: Model, targets: list[str], drop: Sequence[str],
                    path: Path) -> list[str]:
    if model.features:
        _require(frame, model.features, f"features of {model.path}", path)
        return model.features
    return [c for c in frame.columns if c not in targets and c not in drop]


# ---------------------------------------------------------------------------------------------
# scores


def predict(model: Model, x: torch.Tensor, features: list[str], k: int, path: Path
            ) -> torch.Tensor:
    """The model's (n, k) predictions; input or output sizes that do not fit are a UserError."""
    if model.input_dim is not None and x.shape[1] != model.input_dim:
        raise UserError(f"{model.path} takes {model.input_dim} inputs but {path} has "
                        f"{x.shape[1]} feature columns {features}")
    try:
        pred = forward(model, x.float())
    except Exception as exc:  # noqa: BLE001 - TorchScript / onnxruntime errors on a bad shape
        raise UserError(f"{model.path} failed on the {x.shape[1]} feature columns of {path} "
                        f"({reason(exc)})") from exc
    if pred.shape[1] != k:
        raise UserError(f"{model.path} gives {pred.shape[1]} outputs but {path} has {k} "
                        f"target column(s)")
    return pred


def scores(pred: torch.Tensor, y: torch.Tensor, targets: list[str]) -> dict[str, float]:
    """rmse, mae, r2 (means over outputs), then their per-output columns when k > 1."""
    parts = {name: metrics.columns(name, fn(pred, y), targets) for name, fn in SCORES.items()}
    means = {name: part.pop(name) for name, part in parts.items()}
    return means | {key: value for part in parts.values() for key, value in part.items()}


def evaluate(model: str | Path, data: str | Path, teacher: str | Path | None = None,
             targets: Sequence[str] = (), drop: Sequence[str] = (),
             net_target: str | None = None, allow_torch_export: bool = False) -> pd.DataFrame:
    """One row per model: model, file, kind, n_rows, rmse, mae, r2 (+ per output), and
    fidelity_rmse (+ per output) on the model's row when a teacher is given."""
    data = Path(data)
    frame = read_data(data)
    _require(frame, drop, "--drop", data)
    loaded = {"model": load_model(model, net_target, allow_torch_export)}
    if teacher is not None:
        loaded["teacher"] = load_model(teacher, net_target, allow_torch_export)
    names = target_columns(frame, loaded["model"], loaded.get("teacher"), targets, drop, data)
    y = numeric(frame, names, data)
    rows, preds = [], []
    for role, m in loaded.items():
        features = feature_columns(frame, m, names, drop, data)
        pred = predict(m, numeric(frame, features, data), features, len(names), data)
        rows.append({"model": role, "file": str(m.path), "kind": m.kind, "n_rows": len(frame)}
                    | scores(pred, y, names))
        preds.append(pred)
    if teacher is not None:
        rows[0] |= metrics.columns("fidelity_rmse", metrics.rmse(*preds), names)
    return pd.DataFrame(rows)


@one_line_errors("dfkd evaluate")
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dfkd evaluate",
        description="Score a model on a labelled CSV file in raw units: RMSE, MAE and R^2 per "
                    "output and their mean, and the fidelity to a teacher. A model is a dfkd "
                    "checkpoint, a TorchScript or torch.export file, or an ONNX file.")
    parser.add_argument("--model", required=True, metavar="PATH", help="the model to score")
    parser.add_argument("--teacher", metavar="PATH",
                        help="also score this model and the fidelity (RMSE between the two)")
    parser.add_argument("--data", required=True, metavar="FILE.csv",
                        help="labelled rows with a header row")
    parser.add_argument("--target", nargs="+", default=[], metavar="COL",
                        help="the target columns (default: those the checkpoint records, else "
                             "the last k columns for a model of k outputs)")
    parser.add_argument("--drop", nargs="+", default=[], metavar="COL",
                        help="columns that are neither features nor targets")
    parser.add_argument(TARGET_KEY, metavar="CLASS",
                        help="the class of a custom network a checkpoint holds (its _target_): "
                             "dfkd imports a checkpoint's code only when named")
    parser.add_argument("--out", metavar="FILE.csv", help="also write the table here")
    parser.add_argument(ALLOW_TORCH_EXPORT, action="store_true",
                        help="accept torch.export (.pt2) archives; loading one can run code "
                             "stored in the file, so only for files you trust")
    args = parser.parse_args(argv)
    table = evaluate(args.model, args.data, args.teacher, args.target, args.drop,
                     args.net_target, args.allow_torch_export)
    print(table.to_string(index=False, float_format="{:.6g}".format, na_rep=""))
    if args.out:
        write_csv(table, args.out)
        print(f"wrote {args.out}")
    return 0
