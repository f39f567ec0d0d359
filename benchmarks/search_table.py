"""Does the data-free objective pick settings that also lower the test RMSE? (docs/search.md)

`make search` runs, per dataset, an Optuna sweep of configs/hparams_search/bounded_optuna.yaml
into <root>/<dataset>/ and the default settings into <root>/<dataset>_default/; this script
prints one Markdown table per dataset: each trial's settings, its objective (fidelity_rmse_gaussian),
validation and test RMSE (means over the population's seeds), the Spearman rank correlation of
the objective and of the validation RMSE with the test RMSE, and where the objective's pick
lands among the trials by test RMSE.

    python benchmarks/search_table.py outputs/search/<stamp>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

from dfkd_cli.report.gather import gather

PARAMS = ["strategy.steps", "strategy.lr", "alpha"]
SCORES = ["fidelity_rmse_gaussian", "val_rmse", "student_rmse"]


def job_params(job_dir: Path) -> dict[str, str]:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    pairs = dict(o.split("=", 1) for o in overrides)
    return {p: pairs.get(p, "") for p in PARAMS}


def members(path: Path) -> pd.DataFrame:
    """Every ok metrics row below `path`, with the directory of the job that wrote it."""
    runs = gather([path])
    runs = runs[runs.status == "ok"].copy()
    runs["job_dir"] = [d if (Path(d) / ".hydra").is_dir() else str(Path(d).parent)
                       for d in runs.run_dir]
    return runs


def trials(path: Path) -> pd.DataFrame:
    """One row per job below `path` (a sweep, or one run): its settings and mean scores."""
    runs = members(path)
    table = runs.groupby("job_dir")[SCORES].mean().join(runs.groupby("job_dir").seed.count()
                                                        .rename("seeds"))
    params = pd.DataFrame([job_params(Path(d)) | {"job_dir": d} for d in table.index])
    table = params.set_index("job_dir").join(table)
    table["trial"] = [Path(d).name for d in table.index]
    return table.reset_index()


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation: Pearson's on the ranks (ties share their mean rank)."""
    return float(a.rank().corr(b.rank()))


def section(root: Path, dataset: str) -> str:
    found = trials(root / dataset)
    found["trial"] = found["trial"].astype(int)
    found = found.sort_values("trial")
    default = root / f"{dataset}_default"
    if default.is_dir():
        row = trials(default).assign(trial="default", **{"strategy.steps": "2",
                                                         "strategy.lr": "0.1",
                                                         "alpha": "decreasing"})
        shown = pd.concat([found, row], ignore_index=True)
    else:
        shown = found
    pick = found.loc[found.fidelity_rmse_gaussian.idxmin()]
    test_rank = int((found.student_rmse < pick.student_rmse).sum()) + 1
    better_half = found.nsmallest(len(found) // 2, "fidelity_rmse_gaussian")
    lines = [f"### {dataset}", "",
             "| trial | strategy.steps | strategy.lr | alpha | objective: fidelity_rmse_gaussian "
             "| val_rmse | test student_rmse |", "|---|---|---|---|---|---|---|"]
    for _, r in shown.iterrows():
        lr = f"{float(r['strategy.lr']):.3g}" if r["strategy.lr"] else ""
        lines.append(f"| {r.trial} | {r['strategy.steps']} | {lr} | {r.alpha} | "
                     f"{r.fidelity_rmse_gaussian:.4f} | {r.val_rmse:.4f} | {r.student_rmse:.4f} |")
    lines += ["",
              f"- Spearman rank correlation with the test RMSE over the {len(found)} trials: "
              f"objective {spearman(found.fidelity_rmse_gaussian, found.student_rmse):+.2f}, "
              f"validation RMSE {spearman(found.val_rmse, found.student_rmse):+.2f}; over "
              f"the {len(better_half)} trials with the lowest objective: objective "
              f"{spearman(better_half.fidelity_rmse_gaussian, better_half.student_rmse):+.2f}, "
              f"validation RMSE {spearman(better_half.val_rmse, better_half.student_rmse):+.2f}.",
              f"- The objective's pick (trial {pick.trial}) has test RMSE "
              f"{pick.student_rmse:.4f}, rank {test_rank} of {len(found)} by test RMSE; the best "
              f"trial by test RMSE has {found.student_rmse.min():.4f}."]
    if default.is_dir():
        per_seed = (members(root / dataset).query("job_dir == @pick.job_dir")
                    .set_index("seed").student_rmse)
        base = members(default).set_index("seed").student_rmse
        wins = int((per_seed < base.reindex(per_seed.index)).sum())
        lines[-1] += (f" The default settings: {row.student_rmse.iloc[0]:.4f}; the pick is "
                      f"lower on {wins} of {len(per_seed)} seeds.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder `make search` wrote")
    args = parser.parse_args(argv)
    datasets = sorted(p.name for p in args.root.iterdir()
                      if p.is_dir() and (p / "optimization_results.yaml").is_file())
    if not datasets:
        print(f"no sweep with optimization_results.yaml below {args.root}", file=sys.stderr)
        return 2
    print("\n".join(section(args.root, d) for d in datasets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
