"""Closing the gap without data (docs/results.md): the tables of an `experiment=domain_study`
sweep (or any distill runs with several priors, domain settings and selections).

    python benchmarks/domain_study.py <sweep dir>... [--out tables.md]

A recipe is (arm, domain, prior, selection). For each dataset and recipe: n seeds, mean student
RMSE on the test rows and its ratio to the teacher (reported only), the same ratio on the
validation rows (what a recipe is chosen by), and, paired by seed against today's default
(bounded, domain off, gaussian prior, selection last), the mean change of the test RMSE in %,
the seeds it wins and a two-sided paired test. The ranking at the end orders the data-free
recipes (selection last or fidelity) by their mean validation ratio over the datasets.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from dfkd_cli.gather import gather
from dfkd_cli.paired import paired_test
from dfkd_cli.report_text import markdown_table

RECIPE = ["arm", "domain", "prior", "selection"]
DEFAULT = {"arm": "bounded", "domain": "off", "prior": "gaussian", "selection": "last"}


def tables(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per dataset x recipe, ranking of the data-free recipes)."""
    ok = runs[runs.status == "ok"].copy()
    ok["ratio"] = ok.student_rmse / ok.teacher_rmse
    ok["val_ratio"] = ok.val_rmse / ok.teacher_val_rmse
    base = ok
    for key, value in DEFAULT.items():
        base = base[base[key] == value]
    base = base.set_index(["dataset", "seed"]).student_rmse
    rows = []
    for (dataset, *recipe), cell in ok.groupby(["dataset", *RECIPE]):
        paired = cell.set_index(["dataset", "seed"]).student_rmse
        ref = base.reindex(paired.index)
        change = (paired / ref - 1).dropna()
        p, _ = paired_test((paired - ref).dropna().tolist()) if len(change) else (float("nan"),
                                                                                  "")
        rows.append({"dataset": dataset, **dict(zip(RECIPE, recipe)), "n": len(cell),
                     "student_rmse": cell.student_rmse.mean(), "ratio": cell.ratio.mean(),
                     "val_ratio": cell.val_ratio.mean(), "vs_default_%": 100 * change.mean(),
                     "wins": f"{int((change < 0).sum())}/{len(change)}", "p": p})
    table = pd.DataFrame(rows)
    free = table[table.selection.isin(["last", "fidelity"])]
    ranking = (free.groupby(RECIPE).agg(datasets=("dataset", "nunique"),
                                        val_ratio=("val_ratio", "mean"), ratio=("ratio", "mean"),
                                        vs_default=("vs_default_%", "mean"))
               .sort_values(["datasets", "val_ratio"], ascending=[False, True]).reset_index())
    return table, ranking


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset x (arm, domain, prior): the test ratio of each selection, and the
    change against the default of the data-free selections (% with seeds won)."""
    rows = []
    for key, cell in table.groupby(["dataset", "arm", "domain", "prior"], sort=False):
        by = cell.set_index("selection")
        row = dict(zip(["dataset", "arm", "domain", "prior"], key))
        for sel in ("last", "fidelity", "val"):
            if sel in by.index:
                row[f"ratio {sel}"] = round(by.at[sel, "ratio"], 3)
        for sel in ("last", "fidelity"):
            if sel in by.index:
                row[f"{sel} vs default"] = (f"{by.at[sel, 'vs_default_%']:+.1f}% "
                                            f"({by.at[sel, 'wins']})")
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--out", help="also write the tables (Markdown) to this file")
    args = parser.parse_args(argv)
    table, ranking = tables(gather(args.paths))
    text = ["### test RMSE ratio to the teacher per selection, and against the default "
            "(bounded, off, gaussian, last)", "", markdown_table(compact(table).fillna("-"))]
    for dataset, part in table.groupby("dataset"):
        text += [f"### {dataset}", "", markdown_table(part.drop(columns="dataset").round(4).fillna("-"))]
    text += ["### data-free recipes by mean validation ratio over the datasets", "",
             markdown_table(ranking.round(4).fillna("-"))]
    out = "\n".join(text)
    print(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
