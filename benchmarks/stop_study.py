"""The data-free stopping rule (docs/results.md, "Stopping without data"): runs of the default
recipe as stop=plateau (cap E), E = 8000 and E = 2000, each a population of the same seeds.

    python benchmarks/stop_study.py <run or sweep dir>... [--out tables.md]

An arm is `plateau` (a run whose metrics carry a stop_reason) or `E=<epochs>`. Per dataset and
arm: n seeds, the population's wall time, the mean epochs each member ran, the student /
teacher RMSE ratio on the validation rows (what a rule is judged by) and on the test rows
(reported only), and, paired by seed against E = 8000, the mean change of the validation ratio
in % with the seeds where it is no worse.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from dfkd_cli.report.gather import gather
from dfkd_cli.report.text import markdown_table

REFERENCE = "E=8000"


def arms(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs.status == "ok"].copy()
    plateau = ok.get("stop_reason", pd.Series(index=ok.index, dtype=object)).notna()
    ok["arm"] = ["plateau" if p else f"E={int(e)}" for p, e in zip(plateau, ok.epochs)]
    ok["val_ratio"] = ok.val_rmse / ok.teacher_val_rmse
    ok["test_ratio"] = ok.student_rmse / ok.teacher_rmse
    return ok


def table(ok: pd.DataFrame) -> pd.DataFrame:
    ref = ok[ok.arm == REFERENCE].set_index(["dataset", "seed"])
    rows = []
    for (dataset, arm), cell in ok.groupby(["dataset", "arm"]):
        own = cell.set_index(["dataset", "seed"])
        change = (own.val_ratio / ref.val_ratio.reindex(own.index) - 1).dropna()
        wall = ref.wall_s.reindex(own.index).dropna()
        rows.append({"dataset": dataset, "arm": arm, "n": len(cell),
                     "wall_s": cell.wall_s.mean(),
                     "wall vs E=8000": (cell.wall_s.mean() / wall.mean() if len(wall)
                                        else float("nan")),
                     "epochs run (mean, min-max)": (f"{cell.epochs_run.mean():.0f} "
                                                    f"({cell.epochs_run.min()}-"
                                                    f"{cell.epochs_run.max()})"),
                     "val ratio": cell.val_ratio.mean(), "test ratio": cell.test_ratio.mean(),
                     "val vs E=8000 %": 100 * change.mean() if len(change) else float("nan"),
                     "no worse": f"{int((change <= 0).sum())}/{len(change)}"})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    result = table(arms(gather(args.paths)))
    mean = result.groupby("arm")[["wall vs E=8000", "val vs E=8000 %"]].mean()
    out = "\n".join([markdown_table(result.round(4).fillna("-")), "",
                     "mean over datasets:", "", markdown_table(mean.round(4).reset_index())])
    print(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
