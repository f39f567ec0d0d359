"""Spending the default's budget (docs/results.md, "Stopping without data"): runs of the default
recipe with E = 8000 as the paper's alpha over E, with alpha over a shorter horizon
(alpha.horizon) and with stop=plateau after it, each a population of the same seeds.

    python benchmarks/stop_study.py <run dir>... [--out tables.md]

A run directory `<dir>` may have a `<dir>.time` beside it, written by
`/usr/bin/time -f "%e s wall %U s user" -o <dir>.time dfkd distill ...`: its CPU seconds are
the cost column (walls on a shared machine measure the load more than the run). The arm is
E, alpha's horizon (`h`) and the rule's patience (`p`); rows of selection=fidelity (the
recipe's). Per dataset and arm: n seeds, the population's CPU and wall seconds, the epochs the
slowest member ran (what a population pays for on any machine) and the mean, the student /
teacher RMSE ratio on the validation rows (what the choice is made on) and on the test rows
(reported only), and, paired by seed against E = 8000, the mean change of the validation ratio
in % with the seeds where it is no worse.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dfkd_cli.report.gather import add_config_columns, gather
from dfkd_cli.report.paired import relative_change
from dfkd_cli.report.text import markdown_table

REFERENCE = "E=8000"


def cpu_seconds(run_dir: str) -> float | None:
    """User CPU seconds from `<run_dir>.time` (/usr/bin/time's "%U s user"), if there."""
    path = Path(str(run_dir).rstrip("/") + ".time")
    if not path.exists():
        return None
    words = path.read_text().split()
    return float(words[words.index("user") - 2]) if "user" in words else None


def arms(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[(runs.status == "ok") & (runs.selection == "fidelity")].copy()
    horizon = ok.alpha.str.extract(r"-h(\d+)$")[0]
    plateau = ok.get("stop_reason", pd.Series(index=ok.index, dtype=object)).notna()
    ok["arm"] = [f"E={int(e)}" + (f", h={h}" if isinstance(h, str) else "")
                 + (f", p={p}" if stop else "")
                 for e, h, stop, p in zip(ok.epochs, horizon, plateau, ok.stop_patience)]
    ok["val_ratio"] = ok.val_rmse / ok.teacher_val_rmse
    ok["test_ratio"] = ok.student_rmse / ok.teacher_rmse
    return ok


def table(ok: pd.DataFrame) -> pd.DataFrame:
    ref = ok[ok.arm == REFERENCE].set_index(["dataset", "seed"])
    ref_cpu = ref.groupby("dataset").cpu_s.first()
    rows = []
    for (dataset, arm), cell in ok.groupby(["dataset", "arm"]):
        change = relative_change(cell.set_index(["dataset", "seed"]).val_ratio, ref.val_ratio)
        cpu = cell.cpu_s.iloc[0]
        rows.append({
            "dataset": dataset, "arm": arm, "n": len(cell), "cpu_s": cpu,
            "cpu vs E=8000": cpu / ref_cpu.get(dataset, float("nan")), "wall_s": cell.wall_s.iloc[0],
            "population epochs": cell.epochs_run.max(),
            "mean epochs": round(cell.epochs_run.mean()),
            "val ratio": cell.val_ratio.mean(), "test ratio": cell.test_ratio.mean(),
            "val vs E=8000 %": (f"{change['change_%']:+.2f} ({change['no_worse']}"
                                f"/{change['n']})" if change["n"] else "-")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    runs = pd.concat([gather([p]).assign(cpu_s=cpu_seconds(p)) for p in args.paths],
                     ignore_index=True)
    runs = add_config_columns(runs, ["stop_patience"])
    out = markdown_table(table(arms(runs)).round(4).fillna("-"))
    print(out)
    if args.out:
        Path(args.out).write_text(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
