"""Closing the gap without data (docs/results.md): the tables of an `experiment=domain_study`
sweep (or any distill runs with several priors, domain settings and selections).

    python benchmarks/domain_study.py <sweep dir>... [--out tables.md]

A recipe is (arm, domain, prior, selection), run for a student and a budget (epochs, batch
size). For each dataset, student, budget and recipe: n seeds, mean student RMSE on the test rows
and its ratio to the teacher (reported only), the same ratio on the validation rows (what a
recipe is chosen by), and, paired by seed against the paper's recipe (bounded, domain off,
gaussian prior, selection last, E = 2000) for the same student, the mean change of the test RMSE
in %, the seeds it wins and a two-sided paired test. The ranking at the end orders the data-free
recipes (selection last or fidelity) at the paper's budget by their mean validation ratio over
the datasets, per student.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from dfkd_cli.report.gather import gather
from dfkd_cli.report.paired import paired_test, relative_change
from dfkd_cli.report.text import markdown_table

RECIPE = ["arm", "domain", "prior", "selection"]
CELL = ["dataset", "student_hidden", "epochs", "batch_size"]  # what a recipe runs on
PAIRED = ["dataset", "student_hidden", "seed"]  # what a run is paired with the default by
DEFAULT = {"arm": "bounded", "domain": "off", "prior": "gaussian", "selection": "last",
           "epochs": 2000}


def tables(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per dataset x recipe, ranking of the data-free recipes)."""
    ok = runs[runs.status == "ok"].copy()
    ok[["epochs", "batch_size"]] = ok[["epochs", "batch_size"]].astype(int)
    ok["ratio"] = ok.student_rmse / ok.teacher_rmse
    ok["val_ratio"] = ok.val_rmse / ok.teacher_val_rmse
    base = ok
    for key, value in DEFAULT.items():
        base = base[base[key] == value]
    base = base.set_index(PAIRED).student_rmse
    rows = []
    for key, cell in ok.groupby([*CELL, *RECIPE]):
        paired = cell.set_index(PAIRED).student_rmse
        change = relative_change(paired, base)
        p, _ = paired_test((paired - base.reindex(paired.index)).dropna().tolist())
        rows.append({**dict(zip([*CELL, *RECIPE], key)), "n": len(cell),
                     "student_rmse": cell.student_rmse.mean(), "ratio": cell.ratio.mean(),
                     "val_ratio": cell.val_ratio.mean(), "vs_default_%": change["change_%"],
                     "wins": f"{change['better']}/{change['n']}", "p": p})
    table = pd.DataFrame(rows)
    free = table[table.selection.isin(["last", "fidelity"]) & (table.epochs == 2000)]
    ranking = (free.groupby(["student_hidden", *RECIPE]).agg(datasets=("dataset", "nunique"),
                                        val_ratio=("val_ratio", "mean"), ratio=("ratio", "mean"),
                                        vs_default=("vs_default_%", "mean"))
               .sort_values(["student_hidden", "datasets", "val_ratio"],
                            ascending=[True, False, True]).reset_index())
    return table, ranking


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell x (arm, domain, prior): the test ratio of each selection, and the
    change against the default of the data-free selections (% with seeds won)."""
    rows = []
    keys = [*CELL, "arm", "domain", "prior"]
    for key, cell in table.groupby(keys, sort=False):
        by = cell.set_index("selection")
        row = dict(zip(keys, key))
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
    text = ["### test RMSE ratio to the teacher per selection, and against the paper's "
            "recipe (bounded, off, gaussian, last, E = 2000)", "", markdown_table(compact(table).fillna("-"))]
    for dataset, part in table.groupby("dataset"):
        text += [f"### {dataset}", "",
                 markdown_table(part.drop(columns="dataset").round(4).fillna("-"))]
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
