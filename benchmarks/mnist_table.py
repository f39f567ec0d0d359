"""The MNIST case study's table (docs/case_studies.md): per student and arm, at the arm's own
selection, test R^2 and RMSE in digits, RMSE over the reference arm's, and paired over seeds on
the validation rows against a baseline arm and the reference.

    python benchmarks/mnist_table.py SWEEP_DIR... [--baseline paper_bounded]
        [--reference real_kd] [--own ARM=SELECTION ...]

Reads every metrics.csv under the sweep directories (`dfkd distill -m experiment=mnist ...`
with selection=all writes one row per selection and seed; the newest counts where a cell and
seed ran twice). An arm's own selection: fidelity for datafree and the arms labelled
datafree_*, last for the others; --own sets it per arm. Test rows are reported only; the wins
and the mean change are counted on the validation rows (val_rmse), seed by seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dfkd_cli.report.gather import gather  # noqa: E402


def own_selection(arm: str, chosen: dict[str, str]) -> str:
    if arm in chosen:
        return chosen[arm]
    return "fidelity" if arm == "datafree" or arm.startswith("datafree_") else "last"


def rows(paths: list[str], chosen: dict[str, str]) -> pd.DataFrame:
    """One row per student, arm and seed at the arm's own selection."""
    runs = gather(paths)
    runs = runs[(runs["status"] == "ok") & (runs.get("command", "distill") == "distill")]
    runs = runs[runs["selection"] == runs["arm"].map(lambda a: own_selection(a, chosen))]
    runs = runs.sort_values("mtime", kind="stable")
    return runs.drop_duplicates(["student_hidden", "arm", "seed"], keep="last")


def paired(mine: pd.DataFrame, other: pd.DataFrame) -> tuple[str, float]:
    """'wins/pairs' on val_rmse (lower wins) and the mean relative change in %."""
    both = mine[["seed", "val_rmse"]].merge(other[["seed", "val_rmse"]], on="seed",
                                             suffixes=("", "_other"))
    if both.empty:
        return "-", float("nan")
    change = both["val_rmse"] / both["val_rmse_other"] - 1
    return f"{int((change < 0).sum())}/{len(both)}", 100 * float(change.mean())


def table(runs: pd.DataFrame, baseline: str, reference: str) -> pd.DataFrame:
    out = []
    for (student, arm), cell in runs.groupby(["student_hidden", "arm"], sort=False):
        same = runs[runs["student_hidden"] == student]
        ref, base = same[same["arm"] == reference], same[same["arm"] == baseline]
        ratio = (cell.set_index("seed")["student_rmse"]
                 / ref.set_index("seed")["student_rmse"]).dropna()
        r2 = cell.sort_values("seed")["student_r2"]
        vs_base, change_base = paired(cell, base) if arm != baseline else ("-", float("nan"))
        vs_ref, change_ref = paired(cell, ref) if arm != reference else ("-", float("nan"))
        out.append({
            "student": student, "arm": f"{arm} ({cell['selection'].iloc[0]})",
            "seeds": " ".join(str(int(s)) for s in sorted(cell["seed"])),
            "test R2": f"{r2.mean():.3f} +/- {r2.std(ddof=1):.3f} ("
                       + ", ".join(f"{v:.2f}" for v in r2) + ")",
            "RMSE (digits)": f"{cell['student_rmse_original'].mean():.2f} +/- "
                             f"{cell['student_rmse_original'].std(ddof=1):.2f}",
            f"RMSE / {reference}": f"{ratio.mean():.3f}" if len(ratio) else "-",
            f"val wins vs {baseline}": vs_base,
            f"val change vs {baseline} %": f"{change_base:+.1f}",
            f"val wins vs {reference}": vs_ref,
            f"val change vs {reference} %": f"{change_ref:+.1f}",
            "selected epochs": " ".join(str(int(e)) for e in cell.sort_values("seed")
                                        ["selected_epoch"]),
            "wall s (job)": f"{cell['wall_s'].mean():.0f}",
        })
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", help="sweep or run directories")
    parser.add_argument("--baseline", default="paper_bounded")
    parser.add_argument("--reference", default="real_kd")
    parser.add_argument("--own", nargs="*", default=[], metavar="ARM=SELECTION",
                        help="an arm's own selection (default: fidelity for datafree*, else last)")
    args = parser.parse_args(argv)
    chosen = dict(item.split("=", 1) for item in args.own)
    result = table(rows(args.sweeps, chosen), args.baseline, args.reference)
    if result.empty:
        sys.exit(f"no finished distill rows under {', '.join(args.sweeps)}")
    print(result.to_string(index=False))


if __name__ == "__main__":
    main()
