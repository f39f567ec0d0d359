"""The data-free stopping rule (docs/results.md, "Stopping without data"): runs of the default
recipe as stop=plateau (cap E), E = 8000 and E = 2000, each a population of the same seeds.

    python benchmarks/stop_study.py <run or sweep dir>... [--out tables.md]

An arm is `plateau` (a run whose metrics carry a stop_reason) or `E=<epochs>`. Per dataset and
arm: n seeds, the population's wall time, the mean epochs each member ran, the student /
teacher RMSE ratio on the validation rows (what a rule is judged by) and on the test rows
(reported only), and, paired by seed against E = 8000 and E = 2000, the mean change of the
validation ratio in % with the seeds where it is no worse. Walls are comparable only between
runs on the same machine under the same load; `population epochs` (the epochs the slowest
member ran, what a population's wall pays for) is the machine-free cost.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from dfkd_cli.report.gather import add_config_columns, gather
from dfkd_cli.report.text import markdown_table

def arms(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs.status == "ok"].copy()
    plateau = ok.get("stop_reason", pd.Series(index=ok.index, dtype=object)).notna()
    patience = ok.get("stop_patience", pd.Series(index=ok.index, dtype=object))
    ok["arm"] = [f"plateau p={q}" if p else f"E={int(e)}"
                 for p, q, e in zip(plateau, patience, ok.epochs)]
    ok["val_ratio"] = ok.val_rmse / ok.teacher_val_rmse
    ok["test_ratio"] = ok.student_rmse / ok.teacher_rmse
    return ok


def paired(own: pd.DataFrame, ref: pd.DataFrame, column: str) -> pd.Series:
    """Per seed, own / reference - 1 of `column` (seeds both ran)."""
    return (own[column] / ref[column].reindex(own.index) - 1).dropna()


def table(ok: pd.DataFrame) -> pd.DataFrame:
    refs = {name: ok[ok.arm == name].set_index(["dataset", "seed"])
            for name in ("E=8000", "E=2000")}
    rows = []
    for (dataset, arm), cell in ok.groupby(["dataset", "arm"]):
        own = cell.set_index(["dataset", "seed"])
        row = {"dataset": dataset, "arm": arm, "n": len(cell), "wall_s": cell.wall_s.mean(),
               "population epochs": cell.epochs_run.max(),
               "epochs run (mean, min-max)": (f"{cell.epochs_run.mean():.0f} "
                                              f"({cell.epochs_run.min()}-"
                                              f"{cell.epochs_run.max()})"),
               "val ratio": cell.val_ratio.mean(), "test ratio": cell.test_ratio.mean()}
        for name, ref in refs.items():
            change = paired(own, ref, "val_ratio")
            row[f"val vs {name} %"] = (f"{100 * change.mean():+.2f} ({int((change <= 0).sum())}"
                                       f"/{len(change)})" if len(change) else "-")
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    runs = add_config_columns(gather(args.paths), ["stop_patience", "stop_tolerance"])
    result = table(arms(runs))
    out = markdown_table(result.round(4).fillna("-"))
    print(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
