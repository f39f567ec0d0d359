"""`dfkd spec --data train.csv [--target y] [--drop a b] [--out spec.yaml]`: a teacher spec from
the table a model was trained on.

For a model owner who has the training rows when the model is made (in any framework, exported
to TorchScript or ONNX): it writes the spec a foreign teacher needs (teachers/spec.py) with what
`dfkd train-teacher` stores in its own checkpoints, so `teacher.spec=spec.yaml prior=auto`
distils with the Gaussian copula prior, as for a dfkd teacher:

  features, targets               the column names (targets: --target, else the last column)
  mean, sd, target_mean, target_sd
                                  the rows' scalers (Scaler.fit, as train-teacher's)
  low, high, type, levels, simplex, onehot
                                  the inferred input domain (domains.infer)
  quantiles, correlation, copula  64 quantiles per feature and the two correlations

All of it is summaries of the rows (per-feature quantiles and correlations), never a row;
`--no-statistics` leaves the statistics out (prior=auto is then N(0, I)).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from dfkd_cli.data import domains
from dfkd_cli.data.datasets import Scaler, read_csv
from dfkd_cli.errors import UserError, one_line_errors
from dfkd_cli.teachers import spec as teacher_spec
from dfkd_cli.utils.files import atomic_path


def build(data: str | Path, targets: Sequence[str] = (), drop: Sequence[str] = (),
          statistics: bool = True) -> dict[str, Any]:
    """The spec of the rows in `data` as plain lists, numbers and strings, checked as a spec
    file is when a teacher is loaded."""
    table = read_csv(Path(data), Path(data).stem, list(targets) or None, list(drop))
    scaler = Scaler.fit(table.x, table.y)
    found = domains.infer(table.x, with_statistics=statistics)
    values = {"features": list(table.features), "targets": list(table.targets),
              **{key: getattr(scaler, attr).tolist() for key, attr in (
                  ("mean", "x_mean"), ("sd", "x_std"), ("target_mean", "y_mean"),
                  ("target_sd", "y_std"))},
              **teacher_spec.domain_keys(found, list(table.features))}
    spec = teacher_spec.from_values(values)
    teacher_spec.domain(spec, spec.input_dim(), f"the spec of {data}")  # as distill reads it
    return values


def _as_options(message: str) -> str:
    """A table reader's error in this command's words (--target, --drop)."""
    for key, option in (("dataset.target=", "--target "), ("dataset.drop=", "--drop "),
                        ("dataset.drop", "--drop"),
                        ("set dataset.nonfinite=drop to drop them", "remove those rows first")):
        message = message.replace(key, option)
    return message


@one_line_errors("dfkd spec", _as_options)
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dfkd spec",
        description="Write the teacher spec of a training table: feature and target names and "
                    "scalers, the inferred input domain and the input statistics (64 quantiles "
                    "per feature, the correlation and the normal-score correlation) that make "
                    "prior=auto the Gaussian copula for a teacher from elsewhere. Summaries of "
                    "the rows, never rows.")
    parser.add_argument("--data", required=True, metavar="FILE.csv",
                        help="the rows the model was trained on (CSV or CSV.gz, header row)")
    parser.add_argument("--target", nargs="+", default=[], metavar="COL",
                        help="the target column(s) (default: the last column)")
    parser.add_argument("--drop", nargs="+", default=[], metavar="COL",
                        help="columns that are neither features nor targets")
    parser.add_argument("--no-statistics", action="store_true",
                        help="leave out the quantiles and correlations (prior=auto is then "
                             "N(0, I)), for a spec that must reveal less of the data")
    parser.add_argument("--out", metavar="FILE.yaml", help="write here (default: stdout)")
    args = parser.parse_args(argv)
    if args.out and Path(args.out).suffix.lower() not in (".yaml", ".yml"):
        raise UserError(f"--out {args.out}: a spec with statistics is YAML (.yaml or .yml); "
                        "a CSV spec holds per-feature columns only")
    values = build(args.data, args.target, args.drop, not args.no_statistics)
    text = teacher_spec.to_yaml(values, f"dfkd spec of {Path(args.data).name}")
    if not args.out:
        sys.stdout.write(text)
        return 0
    with atomic_path(Path(args.out)) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.out} ({len(values['features'])} features"
          f"{'' if args.no_statistics else ', with input statistics'}); distil with: dfkd "
          f"distill dataset=none teacher=torchscript teacher.path=<model> "
          f"teacher.spec={args.out}",
          file=sys.stderr)
    return 0
