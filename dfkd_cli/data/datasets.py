"""Datasets: the built-in default, CSV files, the paper's named benchmarks and case studies, MNIST
as regression (IDX files); split + scalers.

Split as Zhou & Chiam (Sec. 4.1): `n_train` rows (5000; 2500 in the protein case study) for
training, at most `max_train_fraction` of the rows, the rest split `val_fraction` (10%)
validation / the remainder test, drawn by the run's seed. X and y are
standardised with the mean and sd of the training rows only, so N(0, I) is the natural prior;
a distillation standardises with its teacher's scaler instead (the same one for a dfkd teacher).
A table has k >= 1 target columns.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dfkd_cli.errors import UserError

log = logging.getLogger(__name__)
FLOAT32_MAX = float(np.finfo(np.float32).max)

FRIEDMAN_SEED = 20230111  # the built-in dataset is the same table on every machine
MAX_TRAIN_FRACTION = 0.7  # a dataset with fewer than n_train / 0.7 rows trains on 70% of them
IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST uses


Box = tuple[torch.Tensor, torch.Tensor]  # per-member, per-feature (low, high): (K, d) each
Rows = tuple[torch.Tensor, torch.Tensor]  # per-member training rows: x (K, N, d), y (K, N, out)


@dataclass
class Table:
    """Raw rows: features X (n, d), targets y (n, k), and the column names."""

    name: str
    x: np.ndarray
    y: np.ndarray
    features: list[str]
    targets: list[str]


@dataclass
class Scaler:
    """Per column, x_z = (x - x_mean) / x_std and y_z = (y - y_mean) / y_std: the map between raw
    units and the standardised space where teacher and student meet. Shapes (d,) and (k,)."""

    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> "Scaler":
        """Mean and sd of the rows given (a constant column gets sd 1)."""
        x_std, y_std = x.std(axis=0), y.std(axis=0)
        x_std[x_std == 0], y_std[y_std == 0] = 1.0, 1.0
        return cls(*(torch.tensor(v, dtype=torch.float32)
                     for v in (x.mean(axis=0), x_std, y.mean(axis=0), y_std)))

    @classmethod
    def from_payload(cls, payload: dict) -> "Scaler":
        """From a checkpoint's `scaler` dict (float y_mean / y_std in single-output files)."""
        return cls(*(torch.as_tensor(payload[k], dtype=torch.float32).reshape(-1)
                     for k in ("x_mean", "x_std", "y_mean", "y_std")))

    def payload(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.__dict__.items()}

    def standardise_x(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.x_mean) / self.x_std

    def standardise_y(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.y_mean) / self.y_std


@dataclass
class Split:
    """Standardised train / validation / test tensors, (n, d) and (n, k), and their scaler."""

    name: str
    features: list[str]
    targets: list[str]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    scaler: Scaler
    rows: tuple[np.ndarray, ...] = ()  # the table's row numbers of train / validation / test

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    def to(self, device: torch.device) -> "Split":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return Split(**moved)


def stacked(splits: list[Split], part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, n, d) inputs and (K, n, k) targets of one part (train / val / test) of each member's
    split."""
    return (torch.stack([getattr(s, f"x_{part}") for s in splits]),
            torch.stack([getattr(s, f"y_{part}") for s in splits]))


def friedman1(n_rows: int, noise: float, seed: int = FRIEDMAN_SEED,
              n_features: int = 10) -> Table:
    """Friedman #1 (Friedman 1991): `n_features` features U[0, 1] (10 by default), the first 5
    informative; more of them make a wide dataset (the wide-input benchmark).

    y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise * N(0, 1)
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n_rows, n_features))
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3]
         + 5 * x[:, 4] + noise * rng.standard_normal(n_rows))
    return Table("friedman", x, y[:, None], [f"x{i + 1}" for i in range(n_features)], ["y"])


def read_csv(path: Path, name: str, target: str | list[str] | None, drop: list[str],
             nonfinite: str = "error") -> Table:
    """A CSV or CSV.gz with a header row; `target` names the target column or columns (default:
    the last column). Rows with missing or infinite values are an error, or dropped with
    nonfinite="drop"."""
    if not path.is_file():
        raise UserError(f"dataset file {path} not found")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise UserError(f"dataset file {path} could not be read as CSV: "
                        f"{' '.join(str(exc).split())}") from exc
    missing = [c for c in drop if c not in frame.columns]
    if missing:
        raise UserError(f"dataset.drop names columns not in {path}: {missing}; "
                        f"columns are {list(frame.columns)}")
    frame = frame.drop(columns=list(drop))
    if frame.shape[1] == 0:
        raise UserError(f"dataset.drop={list(drop)} drops every column of {path}")
    targets = ([target] if isinstance(target, str) else list(target or [])) or [frame.columns[-1]]
    missing = [t for t in targets if t not in frame.columns]
    if missing:
        shown = target if isinstance(target, str) else targets
        raise UserError(f"dataset.target={shown!r} is not a column of {path}; "
                        f"columns are {list(frame.columns)}")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise UserError(f"dataset file {path} has non-numeric columns {non_numeric}; "
                        "drop them with dataset.drop=[...] or encode them as numbers")
    bad_rows = ~np.isfinite(frame.to_numpy(dtype=np.float64)).all(axis=1)
    if bad_rows.any():
        if nonfinite != "drop":
            raise UserError(f"dataset file {path} has missing or infinite values in "
                            f"{int(bad_rows.sum())} rows; set dataset.nonfinite=drop to drop them")
        log.warning("dataset file %s: dropped %d of %d rows with missing or infinite values",
                    path, int(bad_rows.sum()), len(frame))
        frame = frame[~bad_rows]
    huge = [c for c in frame.columns if frame[c].abs().max() > FLOAT32_MAX]
    if huge:
        raise UserError(f"dataset file {path} has values beyond float32's range (|v| > "
                        f"{FLOAT32_MAX:.3g}) in columns {huge}, which dfkd computes in; rescale "
                        "them (e.g. to other units) or drop them with dataset.drop=[...]")
    constant = [t for t in targets if len(frame) and frame[t].nunique() == 1]
    if constant:
        raise UserError(f"dataset file {path}: the target columns {constant} are constant; "
                        "there is nothing to learn (R^2 is undefined)")
    y = frame[targets].to_numpy(dtype=np.float64)
    x_frame = frame.drop(columns=targets)
    if x_frame.shape[1] == 0:
        raise UserError(f"dataset file {path} has no feature columns left after the targets "
                        f"{targets} and dataset.drop={list(drop)}; a teacher needs at least one")
    return Table(name, x_frame.to_numpy(dtype=np.float64), y, list(x_frame.columns), targets)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format), gzip-compressed or not: two zero
    bytes, the type code, the number of dimensions, each size as a big-endian int32, the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path} could not be read: {exc}") from exc
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != IDX_UBYTE:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: damaged IDX header (it says {ndim} dimensions; the file has "
                        f"{len(raw)} bytes)")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path}: the header says {shape} but the file holds {data.size} values")
    if data.size == 0:
        raise UserError(f"{path}: the header says {shape}: no images")
    return data.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def read_mnist(folder: Path, parts: list[str], input_shape: list[int] | None) -> Table:
    """MNIST as regression: the digit (0..9) as a number from its 28 x 28 grey pixels (0..255),
    flattened to 784 features; `parts` are the file prefixes read and stacked (t10k, train)."""
    names = [f"{part}-{kind}" for part in parts
             for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    files = [_idx_file(folder, name) for name in names]
    if None in files:
        missing = [n for n, f in zip(names, files) if f is None]
        raise UserError(f"dataset 'mnist': {', '.join(m + '.gz' for m in missing)} not found in "
                        f"{folder}; `dfkd data fetch mnist --data-dir {folder.parent}` downloads "
                        "them (mnist-train: "
                        "the training images), or put MNIST's IDX files in <data_dir>/mnist/ and "
                        "point data_dir=<folder> (or DFKD_DATA_DIR) at the folder above it")
    xs, ys = [], []
    for images, labels in zip(files[0::2], files[1::2]):
        x, y = read_idx(images), read_idx(labels)
        if x.ndim != 3 or y.shape != x.shape[:1]:
            raise UserError(f"{images} ({x.shape}) and {labels} ({y.shape}) are not images and "
                            "their labels")
        xs.append(x.reshape(len(x), -1))
        ys.append(y)
    x = np.concatenate(xs).astype(np.float64)
    if input_shape is not None and int(np.prod(input_shape)) != x.shape[1]:
        raise UserError(f"dataset.input_shape={list(input_shape)} does not hold the "
                        f"{x.shape[1]} pixels of an image in {folder}")
    features = [f"px{i}" for i in range(x.shape[1])]
    return Table("mnist", x, np.concatenate(ys).astype(np.float64)[:, None], features, ["digit"])


def load_table(ds, data_dir: str) -> Table | None:
    """The rows that a `dataset` config names; None for dataset=none (data-free: no rows)."""
    if ds.source == "none":
        return None
    if ds.source == "builtin":
        return friedman1(ds.n_rows, ds.noise, n_features=ds.n_features)
    if ds.source == "csv":
        if not ds.path:
            raise UserError("dataset=csv needs dataset.path=<file.csv or file.csv.gz>")
        return read_csv(Path(ds.path), ds.name, ds.target, list(ds.drop), ds.nonfinite)
    if ds.source == "mnist":
        return read_mnist(Path(data_dir) / "mnist", list(ds.parts), ds.input_shape)
    path = Path(data_dir) / f"{ds.name}.csv.gz"
    if not path.is_file():
        raise UserError(
            f"dataset {ds.name!r}: {path} not found; `dfkd data fetch {ds.name} --data-dir "
            f"{data_dir}` downloads it, or point data_dir=<folder> (or DFKD_DATA_DIR) at a folder "
            f"holding {ds.name}.csv.gz (a CSV with a header, target last)")
    return read_csv(path, ds.name, ds.target, list(ds.drop), ds.nonfinite)


def split(table: Table, n_train: int, val_fraction: float, seed: int,
          scaler: Scaler | None = None, max_train_fraction: float = MAX_TRAIN_FRACTION) -> Split:
    """Shuffle by `seed`, take the training rows (at most `max_train_fraction` of them), split
    the rest validation / test, standardise with `scaler` (default: fitted on the training rows)."""
    n = len(table.y)
    n_train_used = min(n_train, int(max_train_fraction * n))
    if n_train_used < n_train:
        log.info("dataset %s has %d rows: training on %d rows instead of %d",
                 table.name, n, n_train_used, n_train)
    n_val = max(1, int(round(val_fraction * (n - n_train_used))))
    if n - n_train_used - n_val < 1:
        raise UserError(f"dataset {table.name!r} has {n} rows: too few for a train / validation "
                        "/ test split")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.split(order, [n_train_used, n_train_used + n_val])
    scaler = scaler or Scaler.fit(table.x[parts[0]], table.y[parts[0]])

    def tensors(rows):
        x, y = (torch.tensor(v[rows], dtype=torch.float64) for v in (table.x, table.y))
        return scaler.standardise_x(x).float(), scaler.standardise_y(y).float()

    (xtr, ytr), (xva, yva), (xte, yte) = (tensors(p) for p in parts)
    return Split(table.name, table.features, table.targets, xtr, ytr, xva, yva, xte, yte, scaler,
                 tuple(parts))


def split_for(ds, table: Table, seed: int, scaler: Scaler | None = None) -> Split:
    """Member `seed`'s split of `table` with the `dataset` config's n_train / val_fraction /
    max_train_fraction."""
    return split(table, ds.n_train, ds.val_fraction, seed, scaler, ds.max_train_fraction)
