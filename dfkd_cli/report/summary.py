"""The per-cell summary of distillation runs (`dfkd report`): per dataset x student_hidden x
arm x selection (x prior and domain where the runs differ in them, x every override that varies
across the gathered jobs where it splits a cell, x any `--by` column), n, the RMSE's mean and sd
over seeds, the ratio to the teacher, paired wins against a baseline arm and the comparison with
the real-data reference arm (`paired.py`), and the published numbers per cell
(`read_reference`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from dfkd_cli.errors import UserError
from dfkd_cli.report.gather import add_config_columns, swept_keys
from dfkd_cli.report.paired import against_reference, paired

KEYS = ["dataset", "student_hidden", "arm", "selection"]
VARYING_KEYS = ["prior", "domain"]  # cell keys too, in a table whose runs differ in them
BASELINE = "random_sampling"
OK_STATUSES = ("ok", "exists")  # exists: train-teacher kept a teacher already in the store
# keys that make an arm: a cell is paired with the baseline arm's cell that agrees on the others
ARM_KEYS = ("arm", "strategy", "alpha", "batch_size", "label")
# The reference file's arm columns and the arm labels of configs/arm/*.yaml, in the paper's order.
REFERENCE_ARMS = {
    "random_gaussian": "random_sampling",
    "generator_alpha_decreasing": "generator",
    "direct_alpha_decreasing": "bounded",
    "generator_alpha_1": "generator_alpha1",
    "direct_alpha_1": "bounded_alpha1",
}
# The real-data reference arms (configs/arm/real_*.yaml), after the data-free ones; data-free
# cells are set against REAL_REFERENCE (--reference-arm).
REAL_ARMS = ["real_kd", "real_data"]
REAL_REFERENCE = "real_kd"
ARM_ORDER = list(REFERENCE_ARMS.values()) + REAL_ARMS
REFERENCE_COLUMNS = ["reference_arm", "reference_rmse_mean", "ratio_to_reference",
                     "reference_n_pairs", "reference_wins", "reference_losses",
                     "reference_p_value", "reference_test"]
SELECTION_ORDER = ["val", "fidelity", "last"]
# `--reference paper`: the authors' per-seed table (Zhou & Chiam 2023), shipped with dfkd
PAPER_REFERENCE = "paper"


def reference_file(name: str | Path) -> Path:
    """The per-seed reference file `name` stands for: the shipped paper table for "paper", else
    the path itself."""
    if str(name) == PAPER_REFERENCE:
        return Path(__file__).with_name("paper_results_per_seed.csv")
    return Path(name)


def _newest_per_seed(ok: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per cell and seed: the newest; returns (kept, superseded)."""
    if "mtime" in ok.columns:
        ok = ok.sort_values("mtime", kind="stable")
    dup = ok.duplicated(keys + ["seed"], keep="last")
    return ok[~dup], ok[dup]


def _order(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    arms = [baseline] + [a for a in ARM_ORDER if a != baseline]
    rank = {a: i for i, a in enumerate(arms)}
    sel = {s: i for i, s in enumerate(SELECTION_ORDER)}
    return (table.assign(_arm=table["arm"].map(lambda a: (rank.get(a, len(rank)), str(a))),
                         _sel=table["selection"].map(lambda s: (sel.get(s, len(sel)), str(s))))
            .sort_values(["dataset", "student_hidden", "_sel", "_arm"], kind="stable")
            .drop(columns=["_arm", "_sel"]).reset_index(drop=True))


def read_reference(path: str | Path) -> pd.DataFrame:
    """The authors' per-seed file -> per (dataset, student_hidden, arm): paper_mean, paper_sd,
    paper_n, paper_teacher. Dataset names are matched case-insensitively (column _dataset_key);
    student_hidden 25 -> mlp25-tanh."""
    path = reference_file(path)
    if not path.is_file():
        raise UserError(f"--reference {path} not found")
    ref = pd.read_csv(path)
    needed = {"dataset", "student_hidden", "teacher", *REFERENCE_ARMS}
    if not needed <= set(ref.columns):
        raise UserError(f"--reference {path} lacks columns {sorted(needed - set(ref.columns))}")
    ref["_dataset_key"] = ref["dataset"].str.lower()
    ref["student_hidden"] = ref["student_hidden"].map(lambda h: f"mlp{int(h)}-tanh")
    long = ref.melt(id_vars=["_dataset_key", "student_hidden", "teacher"],
                    value_vars=list(REFERENCE_ARMS), var_name="column", value_name="rmse")
    long["arm"] = long["column"].map(REFERENCE_ARMS)
    cells = long.groupby(["_dataset_key", "student_hidden", "arm"])
    return cells.agg(paper_mean=("rmse", "mean"), paper_sd=("rmse", "std"),
                     paper_n=("rmse", "size"), paper_teacher=("teacher", "mean")).reset_index()


def resolve_baseline(runs: pd.DataFrame, baseline: str = BASELINE) -> tuple[str, str | None]:
    """The arm label `baseline` stands for, and a note when it is not the label itself: an arm
    label is itself; a strategy name (`random`) is the one arm of that strategy among the runs;
    the default, random_sampling, is the one arm of strategy random when no arm has that label
    (a sweep over strategy= labels its arms <strategy>_<alpha>_m<batch size>)."""
    ok = runs[runs.get("status", pd.Series(dtype=str)) == "ok"]
    if "arm" not in ok.columns or baseline in set(ok["arm"]) or "strategy" not in ok.columns:
        return baseline, None
    strategy = "random" if baseline == BASELINE else baseline
    arms = sorted(ok.loc[ok["strategy"] == strategy, "arm"].astype(str).unique())
    if len(arms) != 1:
        return baseline, None
    return arms[0], (f"baseline: arm {arms[0]!r}, the one arm of strategy={strategy} here "
                     f"(for --baseline {baseline}; --baseline picks another arm or strategy)")


def summarize(runs: pd.DataFrame, baseline: str = BASELINE, by: Sequence[str] = (),
              reference: pd.DataFrame | None = None, reference_arm: str = REAL_REFERENCE
              ) -> tuple[pd.DataFrame, list[str]]:
    """The per-cell table of the distillation runs, and notes (superseded duplicates, missing
    baseline or real-data reference). Failed and missing jobs count in n_failed; they never
    enter the statistics."""
    notes: list[str] = []
    distill = runs[runs.get("command", pd.Series("distill", index=runs.index))
                   .fillna("distill") == "distill"]
    baseline, chosen = resolve_baseline(distill, baseline)
    if chosen:
        notes.append(chosen)
    distill, keys = _cell_keys(distill, by)
    ok = distill[distill["status"] == "ok"]
    bad = distill[distill["status"] != "ok"]
    ok, superseded = _newest_per_seed(ok, keys)
    for _, row in superseded.iterrows():
        notes.append(f"superseded (a newer run of the same cell and seed counts): {row.run_dir}")
    columns = keys + ["n", "n_failed", "rmse_mean", "rmse_sd", "teacher_rmse_mean", "ratio_mean",
                      "baseline", "n_pairs", "wins", "losses", "p_value", "test",
                      *REFERENCE_COLUMNS, "seeds"]
    rows = _compare(ok, bad, keys, baseline, reference_arm, notes)
    failed_only = [row for row in rows if not row["n"]]
    if failed_only:  # listed with the failed runs, not as cells of their own
        notes.append(f"{len(failed_only)} cells have no finished run, only failed or "
                     "unfinished ones (listed under 'Failed or incomplete runs'): "
                     + ", ".join(sorted({str(row.get("arm")) for row in failed_only})))
    table = pd.DataFrame([row for row in rows if row["n"]], columns=columns)
    if table.empty:
        return table, notes
    table = _order(table, baseline)
    return (table if reference is None else _with_paper(table, reference)), notes


def _cell_keys(distill: pd.DataFrame, by: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The runs with a column per cell key, and the cell keys: KEYS, VARYING_KEYS where the runs
    differ in them, the `by` columns, and every swept key that splits a cell (strategy=a,b
    already differs by arm)."""
    keys = KEYS + [c for c in VARYING_KEYS if c in distill.columns
                   and distill[c].nunique() > 1]  # (a failed job has no value: not a difference)
    keys += [c for c in by if c not in keys]
    swept = [k for k in swept_keys(distill) if k not in keys]
    distill = add_config_columns(distill.assign(**{k: pd.NA for k in KEYS
                                                   if k not in distill.columns}),
                                 [*keys, *swept])
    unknown = [k for k in by if len(distill) and distill[k].isna().all()]
    if unknown:
        raise UserError(f"--by {' '.join(unknown)}: no run has such a metrics column or config "
                        "key (a config key is written as in an override, e.g. optimizer.lr); "
                        f"metrics columns: {', '.join(c for c in distill.columns if c not in by)}")
    keys += [k for k in swept if len(distill) and distill.groupby(keys, dropna=False)[k]
             .nunique(dropna=False).gt(1).any()]
    return distill, keys


def _cells(ok: pd.DataFrame, bad: pd.DataFrame, keys: list[str]
           ) -> tuple[dict[tuple, dict], dict[tuple, pd.DataFrame]]:
    """Per cell, n, n_failed, the RMSE mean and sd, the teacher's, the ratio and the seeds; and
    the cell's ok rows."""
    cells: dict[tuple, dict] = {}
    members: dict[tuple, pd.DataFrame] = {}
    for cell, group in ok.groupby(keys, dropna=False, sort=False):
        members[cell] = group
        ratio = group["student_rmse"] / group["teacher_rmse"]
        cells[cell] = {"n": len(group), "rmse_mean": group["student_rmse"].mean(),
                       "rmse_sd": group["student_rmse"].std(ddof=1),
                       "teacher_rmse_mean": group["teacher_rmse"].mean(),
                       "ratio_mean": ratio.mean(),
                       "seeds": " ".join(str(int(s)) for s in sorted(group["seed"]))}
    for cell, group in bad.groupby(keys, dropna=False, sort=False):
        cells.setdefault(cell, {"n": 0})["n_failed"] = len(group)
    return cells, members


def _pair_keys(ok: pd.DataFrame, keys: list[str]) -> list[str]:
    """The keys on which a cell is paired with another arm's: the dataset, student and
    selection, and every other cell key but those that make an arm (ARM_KEYS) and those each arm
    holds at one value (arm=datafree's prior=auto beside arm=paper_bounded's gaussian, a
    `shift=2` given to one labelled arm only): part of what the arm is, not a condition both
    arms ran under."""
    def per_arm(key: str) -> bool:
        return bool(ok.groupby("arm")[key].nunique(dropna=False).le(1).all())
    return [k for k in keys if k.split(".")[0] not in ARM_KEYS
            and (k in KEYS or not (len(ok) and per_arm(k)))]


def _compare(ok: pd.DataFrame, bad: pd.DataFrame, keys: list[str], baseline: str,
             reference_arm: str, notes: list[str]) -> list[dict]:
    """One row per cell: its statistics, paired against the baseline arm's cell and set against
    the real-data reference arm's (same keys but the arm's); what cannot be paired is noted."""
    cells, members = _cells(ok, bad, keys)
    base = ok[ok["arm"] == baseline]
    if len(ok) and base.empty:
        notes.append(f"baseline arm {baseline!r} is not among these runs: no paired comparison "
                     f"(--baseline picks another; arms here: {sorted(ok['arm'].astype(str).unique())})")
    pair_keys = _pair_keys(ok, keys)

    def per_seed(arm: str) -> dict[tuple, pd.Series]:
        return {tuple(c) if isinstance(c, tuple) else (c,): g.set_index("seed")["student_rmse"]
                for c, g in ok[ok["arm"] == arm].groupby(pair_keys, dropna=False, sort=False)}
    base_by, real_by = per_seed(baseline), per_seed(reference_arm)
    rows, unreferenced = [], []
    for cell, stats in cells.items():
        row = dict(zip(keys, cell)) | {"n_failed": 0} | stats
        if not row["n"]:
            rows.append(row)
            continue
        mine = members[cell].set_index("seed")["student_rmse"]
        pair = tuple(row[k] for k in pair_keys)
        if row["arm"] != baseline and pair in base_by:
            if base_by[pair].index.has_duplicates:
                notes.append(f"no paired comparison for {cell}: the baseline arm has several "
                             "runs per seed there (cells it splits into; --by picks one)")
            else:
                row |= {"baseline": baseline} | paired(mine, base_by[pair])
        if row["arm"] != reference_arm:
            ref = real_by.get(pair)
            if ref is not None and not ref.index.has_duplicates:
                row |= against_reference(mine, ref, reference_arm)
            if "reference_arm" not in row:
                unreferenced.append("/".join(str(v) for v in pair))
        rows.append(row)
    if real_by and unreferenced:
        notes.append(f"no {reference_arm} rows on the same seeds for "
                     f"{', '.join(dict.fromkeys(unreferenced))}: ratio_to_reference is empty there")
    elif len(ok) and not real_by:
        notes.append(f"ratio_to_reference is empty: the real-data reference arm {reference_arm!r} "
                     "is not among these runs (run it with the same dataset, student, seeds and "
                     f"selection: arm={reference_arm}, or experiment=paper; --reference-arm picks "
                     "another)")
    return rows


def _with_paper(table: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """The table with the published mean, sd and n per cell (read_reference) and ours - theirs."""
    table["_dataset_key"] = table["dataset"].astype(str).str.lower()
    table = table.merge(reference, how="left", on=["_dataset_key", "student_hidden", "arm"])
    table = table.drop(columns="_dataset_key")
    table["paper_diff"] = table["rmse_mean"] - table["paper_mean"]
    table["within_2sd"] = (table["paper_diff"].abs() <= 2 * table["paper_sd"]).where(
        table["paper_mean"].notna() & table["rmse_mean"].notna())
    return table


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows that did not end ok: failed jobs, unreadable files, jobs without metrics."""
    bad = runs[~runs["status"].isin(OK_STATUSES)]
    cols = [c for c in ("run_dir", "command", "dataset", "student_hidden", "arm", "selection",
                        "seed", "seeds", "status", "error", "overrides") if c in bad.columns]
    return bad[cols].reset_index(drop=True)
