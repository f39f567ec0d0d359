"""`dfkd report PATH...`: every run below some run or sweep directories -> one table.

It reads every `metrics.csv` below the given paths (single runs, sweeps, population members,
partial or failed sweeps alike) into one pandas table of runs, and summarises the distillation
runs per cell (dataset x student_hidden x arm x selection, x prior and domain where the runs
differ in them, x every override that varies across the gathered jobs where it splits a cell,
x any `--by` metrics column or config key):

- n, and mean +/- sd (ddof 1) of student_rmse over the seeds of the cell;
- the ratio to the teacher: the mean over seeds of student_rmse / teacher_rmse;
- paired wins against a baseline arm (`--baseline`, default random_sampling): over the seeds
  that both the cell and the baseline's cell (same dataset, student, selection) have, how often
  the arm's RMSE is lower, with a two-sided paired test: Wilcoxon signed-rank when scipy is
  installed, else an exact sign test (ties dropped);
- against the real-data reference arm (`--reference-arm`, default real_kd: the same student
  fitted to the teacher on the split's training rows), over the seeds both cells have: the
  reference's mean RMSE, ratio_to_reference (the mean over seeds of the arm's RMSE over the
  reference's) and the paired wins and test as for the baseline; empty, with a note saying why,
  where the runs hold no reference rows for the cell;
- with `--reference FILE` (the authors' per-seed results), the published mean, sd and n per cell
  and our mean minus theirs.

Failed runs (status other than ok) and jobs that left no metrics.csv (still running, killed)
are counted per cell and listed by run directory; they never enter the means. When the same
cell and seed were run more than once, the newest metrics.csv counts and the rest are listed.

It writes report.csv (the summary, numbers only), report.md, report.tex and runs.csv (every
row gathered, with its run directory) into `--out` (default: the first PATH), and prints the
Markdown. The end-of-sweep callback (dfkd_cli.tracking.callbacks) writes the same files into each sweep
directory.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from dfkd_cli.errors import one_line_errors
from dfkd_cli.report.summary import BASELINE, REAL_REFERENCE
from dfkd_cli.report.write import write_report


@one_line_errors("dfkd report")
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dfkd report",
        description="Gather every metrics.csv below run or sweep directories into one table: "
                    "per dataset x student x arm x selection, mean +/- sd of the student's test "
                    "RMSE over seeds, the ratio to the teacher, paired wins against a "
                    "baseline arm and the ratio to the real-data reference arm. Failed and "
                    "unfinished jobs are listed.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run or sweep directories")
    parser.add_argument("--baseline", default=BASELINE,
                        help="the arm the others are paired against: an arm's label (the "
                             "label arm= sets, else <strategy>_<alpha>_m<batch size>, e.g. "
                             "random_decreasing_m50) or a strategy run by one arm (random); "
                             f"default: {BASELINE}, else the one arm of strategy random")
    parser.add_argument("--reference-arm", default=REAL_REFERENCE, metavar="ARM",
                        help="the real-data reference arm every other cell is set against "
                             f"(ratio_to_reference; default: {REAL_REFERENCE})")
    parser.add_argument("--reference", metavar="FILE",
                        help="the published per-seed results: `paper` (Zhou & Chiam's, shipped "
                             "with dfkd) or a CSV of the same columns (dataset, student_hidden, "
                             "seed, teacher, random_gaussian, ...); adds the published mean per "
                             "cell")
    parser.add_argument("--out", metavar="DIR",
                        help="where report.csv/.md/.tex and runs.csv go (default: the first PATH)")
    parser.add_argument("--by", nargs="*", default=[], metavar="KEY",
                        help="more metrics columns or config keys that split cells (e.g. "
                             "batch_size optimizer.momentum); the overrides a sweep varied "
                             "split cells without it")
    parser.add_argument("--plots", action="store_true",
                        help="also draw plots/ (needs matplotlib: the [plots] extra)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the file names")
    args = parser.parse_args(argv)
    result = write_report(args.paths, args.out, args.baseline, args.reference, args.by,
                          args.plots, args.reference_arm)
    if not args.quiet:
        print(result["markdown"])
    print("wrote " + ", ".join(str(p) for p in result["written"]))
    return 0
