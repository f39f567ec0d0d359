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
Markdown. The end-of-sweep callback (dfkd_cli.callbacks) writes the same files into each sweep
directory.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
from omegaconf import OmegaConf

from dfkd_cli.errors import UserError
from dfkd_cli.files import atomic_path, write_csv
from dfkd_cli.resume import MAY_CHANGE
from dfkd_cli.tables import HISTORY, METRICS

log = logging.getLogger(__name__)

KEYS = ["dataset", "student_hidden", "arm", "selection"]
VARYING_KEYS = ["prior", "domain"]  # cell keys too, in a table whose runs differ in them
BASELINE = "random_sampling"
OK_STATUSES = ("ok", "exists")  # exists: train-teacher kept a teacher already in the store
# keys that make an arm: a cell is paired with the baseline arm's cell that agrees on the others
ARM_KEYS = ("arm", "strategy", "alpha", "batch_size", "label")
MISSING = "missing"  # a job directory with a config but no metrics.csv below it
WRITES_METRICS = ("distill", "train-teacher")  # commands whose jobs end with a metrics.csv
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
OUTPUTS = ("report.csv", "report.md", "report.tex", "runs.csv")


# ---------------------------------------------------------------------------------------------
# gathering


def _job_config(run_dir: Path):
    """The composed config Hydra saved for the job that wrote `run_dir` (a population member's
    directory is seed<N>/ below the job's), or None."""
    for folder in (run_dir, run_dir.parent):
        path = folder / ".hydra" / "config.yaml"
        if path.is_file():
            try:
                return OmegaConf.load(path), folder
            except Exception:  # noqa: BLE001 - a damaged file only loses the extra columns
                return None, folder
    return None, None


def _override_list(job_dir: Path | None) -> list[str]:
    path = None if job_dir is None else job_dir / ".hydra" / "overrides.yaml"
    if path is None or not path.is_file():
        return []
    try:
        return [str(o) for o in OmegaConf.load(path)]
    except Exception:  # noqa: BLE001
        return []


def _overrides(job_dir: Path | None) -> str:
    return " ".join(_override_list(job_dir))


def _override_keys(job_dir: Path | None) -> dict[str, str]:
    """A job's command-line overrides as key -> value (`+`/`~` dropped; Hydra's own skipped)."""
    out = {}
    for override in _override_list(job_dir):
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if not key.startswith("hydra"):
            out[key] = value
    return out


def _config_value(cfg, key: str, override: str | None) -> str | None:
    """A config key's value in a job's saved config, as text (a group's: its override)."""
    try:
        value = OmegaConf.select(cfg, key) if cfg is not None else None
    except Exception:  # noqa: BLE001 - an interpolation we cannot resolve here
        value = None
    if OmegaConf.is_dict(value) or value is None:
        return override
    return str(OmegaConf.to_container(value) if OmegaConf.is_list(value) else value)


def add_config_columns(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A column per config key (e.g. optimizer.lr) from each row's job config (.hydra/)."""
    keys = [k for k in keys if k not in runs.columns]
    if not keys or "job_dir" not in runs.columns:
        return runs.assign(**{k: pd.NA for k in keys})
    values: dict[str, list] = {k: [] for k in keys}
    cache: dict[str, tuple] = {}
    for job in runs["job_dir"]:
        if not isinstance(job, str):
            for k in keys:
                values[k].append(pd.NA)
            continue
        if job not in cache:
            cache[job] = (_job_config(Path(job))[0], _override_keys(Path(job)))
        cfg, overrides = cache[job]
        for k in keys:
            values[k].append(_config_value(cfg, k, overrides.get(k)))
    return runs.assign(**values)


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """The overridden keys whose values differ between the runs' jobs (a sweep's axes), except
    the seeds (replicates) and keys that do not change a result (resume.MAY_CHANGE)."""
    if "job_dir" not in runs.columns:
        return []
    seen: dict[str, set] = {}
    jobs = [Path(j) for j in runs["job_dir"].dropna().unique()]
    per_job = [_override_keys(job) for job in jobs]
    for overrides in per_job:
        for key, value in overrides.items():
            seen.setdefault(key, set()).add(value)
    ignored = {"seed", "seeds", *MAY_CHANGE}
    return [k for k, values in seen.items() if k.split(".")[0] not in ignored
            and (len(values) > 1 or any(k not in o for o in per_job))]


def _cell_of(cfg) -> dict:
    """dataset / student_hidden / arm / selection / seed(s) of a job from its saved config, for
    rows that do not carry them (a failed job's row, a job that left no row)."""
    if cfg is None:
        return {}
    from dfkd_cli.distill import arm_label  # the label the runs themselves write
    from dfkd_cli.teacher import arch_label, config_arch_name

    out = {"command": cfg.get("command")}
    try:
        out["dataset"] = cfg.dataset.name
        if cfg.get("command") == "distill":
            out["arm"] = arm_label(cfg)
            out["selection"] = cfg.selection
            out["student_hidden"] = config_arch_name(cfg.student)
        out["teacher_hidden"] = arch_label(cfg.teacher)
        out["seed"] = cfg.seed
        if cfg.get("seeds"):
            out["seeds"] = ",".join(str(s) for s in cfg.seeds)
    except Exception:  # noqa: BLE001 - an interpolation or key we cannot read: keep what we have
        pass
    return out


def _fill(frame: pd.DataFrame, values: dict) -> pd.DataFrame:
    for key, value in values.items():
        if key == "seed" and "seed" in frame.columns and frame["seed"].notna().all():
            continue
        if key not in frame.columns:
            frame[key] = value
        else:
            frame[key] = frame[key].where(frame[key].notna(), value)
    return frame


def _read_metrics(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
        if frame.empty:
            raise ValueError("no rows")
    except Exception as exc:  # noqa: BLE001 - a half-written or damaged file is a failed run
        frame = pd.DataFrame([{"status": "unreadable", "error": f"{type(exc).__name__}: {exc}"}])
    frame["run_dir"] = str(path.parent)
    frame["mtime"] = path.stat().st_mtime
    cfg, job_dir = _job_config(path.parent)
    if "status" not in frame.columns or (frame["status"] != "ok").any():
        frame = _fill(frame, _cell_of(cfg))
    frame["overrides"] = _overrides(job_dir)
    frame["job_dir"] = None if job_dir is None else str(job_dir)
    return frame


def _job_dirs(root: Path) -> Iterable[Path]:
    """Every Hydra job directory below root (one holding .hydra/config.yaml)."""
    if (root / ".hydra" / "config.yaml").is_file():
        yield root
    for path in root.rglob("config.yaml"):
        if path.parent.name == ".hydra" and path.parent.parent != root:
            yield path.parent.parent


def gather(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Every metrics.csv row below `paths`, plus a status=missing row for each job directory
    that has none (a job still running, killed, or lost). Columns: the metrics' own, run_dir,
    and for rows that are not ok the job's cell and overrides read from its .hydra/ folder."""
    frames, seen, jobs_seen = [], set(), set()
    for root in map(Path, paths):
        if not root.exists():
            raise UserError(f"{root} not found")
        files = [root] if root.is_file() else sorted(root.rglob(METRICS))
        for path in files:
            if path.name != METRICS or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            frames.append(_read_metrics(path))
        if root.is_dir():
            for job in _job_dirs(root):
                if job.resolve() in jobs_seen:
                    continue
                jobs_seen.add(job.resolve())
                if next(job.rglob(METRICS), None) is None:
                    cfg, _ = _job_config(job)
                    if cfg is None or cfg.get("command") not in WRITES_METRICS:
                        continue  # e.g. a dfkd probe run: it writes probe.csv
                    row = {"status": MISSING, "error": "no metrics.csv (still running, killed, "
                           "or stopped before writing)", "run_dir": str(job),
                           **_cell_of(cfg), "overrides": _overrides(job), "job_dir": str(job)}
                    frames.append(pd.DataFrame([row]))
    if not frames:
        raise UserError(f"no {METRICS} below {', '.join(map(str, paths))}")
    runs = pd.concat(frames, ignore_index=True, sort=False)
    if "status" not in runs.columns:
        runs["status"] = "ok"
    runs["status"] = runs["status"].fillna("unknown")
    if {"strategy", "alpha", "batch_size"} <= set(runs.columns):  # rows from before the arm column
        derived = (runs["strategy"].astype(str) + "_" + runs["alpha"].astype(str) + "_m"
                   + runs["batch_size"].astype("Int64").astype(str))
        has_run = runs["strategy"].notna()
        runs["arm"] = (runs["arm"] if "arm" in runs.columns else pd.Series(pd.NA, index=runs.index)
                       ).where(lambda a: a.notna() | ~has_run, derived)
    return runs


# ---------------------------------------------------------------------------------------------
# paired tests


def sign_test(differences: Sequence[float]) -> float:
    """Exact two-sided sign test of median(differences) = 0; zero differences are dropped.
    p = min(1, 2 * P(X <= min(k, n - k))) for X ~ Binomial(n, 1/2)."""
    signs = [d for d in differences if d != 0]
    n = len(signs)
    if n == 0:
        return 1.0
    k = sum(1 for d in signs if d > 0)
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_test(differences: Sequence[float]) -> tuple[float, str]:
    """(two-sided p-value, test name) for paired differences: Wilcoxon signed-rank when scipy is
    installed, else the exact sign test."""
    differences = [float(d) for d in differences]
    if not differences:
        return math.nan, ""
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return sign_test(differences), "sign"
    if all(d == 0 for d in differences):
        return 1.0, "wilcoxon"
    return float(wilcoxon(differences).pvalue), "wilcoxon"


def paired(mine: pd.Series, other: pd.Series, prefix: str = "") -> dict:
    """Two per-seed RMSE series compared over the seeds both have: n_pairs, wins (mine lower),
    losses, and the two-sided paired test's p_value and name, each key after `prefix`."""
    common = mine.index.intersection(other.index)
    diff = (mine[common] - other[common]).tolist()
    p, test = paired_test(diff)
    return {f"{prefix}n_pairs": len(common), f"{prefix}wins": sum(d < 0 for d in diff),
            f"{prefix}losses": sum(d > 0 for d in diff), f"{prefix}p_value": p,
            f"{prefix}test": test}


def against_reference(mine: pd.Series, ref: pd.Series, arm: str) -> dict:
    """A cell's per-seed RMSE set against the real-data reference cell's, over the seeds both
    have: the reference's mean, ratio_to_reference (mean of mine / ref) and the paired test."""
    common = mine.index.intersection(ref.index)
    if not len(common):
        return {}
    return {"reference_arm": arm, "reference_rmse_mean": ref[common].mean(),
            "ratio_to_reference": (mine[common] / ref[common]).mean(),
            **paired(mine, ref, "reference_")}


# ---------------------------------------------------------------------------------------------
# the summary


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
    path = Path(path)
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


def summarize(runs: pd.DataFrame, baseline: str = BASELINE, by: Sequence[str] = (),
              reference: pd.DataFrame | None = None, reference_arm: str = REAL_REFERENCE
              ) -> tuple[pd.DataFrame, list[str]]:
    """The per-cell table of the distillation runs, and notes (superseded duplicates, missing
    baseline or real-data reference). Failed and missing jobs count in n_failed; they never
    enter the statistics."""
    keys = KEYS + [c for c in VARYING_KEYS if c in runs.columns
                   and runs[c].nunique() > 1]  # (a failed job has no value: not a difference)
    keys += [c for c in by if c not in keys]
    notes: list[str] = []
    distill = runs[runs.get("command", pd.Series("distill", index=runs.index))
                   .fillna("distill") == "distill"]
    swept = [k for k in swept_keys(distill) if k not in keys]
    distill = add_config_columns(distill.assign(**{k: pd.NA for k in KEYS
                                                   if k not in distill.columns}),
                                 [*keys, *swept])
    # a swept key is a cell key where it splits a cell (strategy=a,b already differs by arm)
    keys += [k for k in swept if len(distill) and distill.groupby(keys, dropna=False)[k]
             .nunique(dropna=False).gt(1).any()]
    ok = distill[distill["status"] == "ok"]
    bad = distill[distill["status"] != "ok"]
    ok, superseded = _newest_per_seed(ok, keys)
    for _, row in superseded.iterrows():
        notes.append(f"superseded (a newer run of the same cell and seed counts): {row.run_dir}")

    columns = keys + ["n", "n_failed", "rmse_mean", "rmse_sd", "teacher_rmse_mean", "ratio_mean",
                      "baseline", "n_pairs", "wins", "losses", "p_value", "test",
                      *REFERENCE_COLUMNS, "seeds"]
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

    base = ok[ok["arm"] == baseline]
    if len(ok) and base.empty:
        notes.append(f"baseline arm {baseline!r} is not among these runs: no paired comparison "
                     f"(--baseline picks another; arms here: {sorted(ok['arm'].astype(str).unique())})")
    pair_keys = [k for k in keys if k.split(".")[0] not in ARM_KEYS]

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
    table = pd.DataFrame(rows, columns=columns)
    if table.empty:
        return table, notes
    table = _order(table, baseline)
    if reference is not None:
        table["_dataset_key"] = table["dataset"].astype(str).str.lower()
        table = table.merge(reference, how="left", on=["_dataset_key", "student_hidden", "arm"])
        table = table.drop(columns="_dataset_key")
        table["paper_diff"] = table["rmse_mean"] - table["paper_mean"]
        table["within_2sd"] = (table["paper_diff"].abs() <= 2 * table["paper_sd"]).where(
            table["paper_mean"].notna() & table["rmse_mean"].notna())
    return table, notes


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows that did not end ok: failed jobs, unreadable files, jobs without metrics."""
    bad = runs[~runs["status"].isin(OK_STATUSES)]
    cols = [c for c in ("run_dir", "command", "dataset", "student_hidden", "arm", "selection",
                        "seed", "seeds", "status", "error", "overrides") if c in bad.columns]
    return bad[cols].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# rendering


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p(value) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def display(table: pd.DataFrame, pm: str = "±") -> pd.DataFrame:
    """The summary as strings, as read in the Markdown and LaTeX tables."""
    out = pd.DataFrame()
    for key in KEYS + _by_columns(table):
        out[key] = table[key].map(_num)
    out["n"] = table["n"].map(str)
    out["failed"] = table["n_failed"].map(lambda v: str(int(v)) if v else "")
    out["RMSE mean"] = [f"{_num(m)} {pm} {_num(s)}" if n > 1 else _num(m)
                        for m, s, n in zip(table["rmse_mean"], table["rmse_sd"], table["n"])]
    out["teacher"] = table["teacher_rmse_mean"].map(_num)
    out["ratio"] = table["ratio_mean"].map(lambda v: _num(v, 3))
    out["wins vs baseline"] = _wins(table, "baseline", "")
    out["real-data reference"] = table["reference_rmse_mean"].map(_num)
    out["ratio to reference"] = table["ratio_to_reference"].map(lambda v: _num(v, 3))
    out["wins vs reference"] = _wins(table, "reference_arm", "reference_")
    if "paper_mean" in table.columns:
        out["paper"] = [f"{_num(m)} {pm} {_num(s)}" if pd.notna(m) else ""
                        for m, s in zip(table["paper_mean"], table["paper_sd"])]
        out["diff"] = table["paper_diff"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}")
        out["within 2 sd"] = table["within_2sd"].map(
            lambda v: "" if v is None or pd.isna(v) else ("yes" if v else "no"))
    return out


def _wins(table: pd.DataFrame, against: str, prefix: str) -> list[str]:
    """'wins/pairs (p=..., test)' per cell for the comparison whose columns start `prefix`."""
    out = []
    for _, r in table.iterrows():
        if pd.isna(r[f"{prefix}n_pairs"]) or pd.isna(r[against]):
            out.append("")
        else:
            out.append(f"{int(r[prefix + 'wins'])}/{int(r[prefix + 'n_pairs'])} "
                       f"(p={_p(r[prefix + 'p_value'])}, {r[prefix + 'test']})")
    return out


def _by_columns(table: pd.DataFrame) -> list[str]:
    known = {"n", "n_failed", "rmse_mean", "rmse_sd", "teacher_rmse_mean", "ratio_mean",
             "baseline", "n_pairs", "wins", "losses", "p_value", "test", "seeds", "paper_mean",
             "paper_sd", "paper_n", "paper_teacher", "paper_diff", "within_2sd",
             *REFERENCE_COLUMNS}
    return [c for c in table.columns if c not in known and c not in KEYS]


def text_cell(value) -> str:
    """A cell as text: empty for a missing value (NaN, None, pd.NA), else str(value)."""
    return "" if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) \
        else str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    cells = frame.map(lambda v: text_cell(v).replace("|", "\\|").replace("\n", " "))
    lines = ["| " + " | ".join(frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
        "±": r"$\pm$"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "% no distillation runs\n"
    head = " & ".join(_tex(str(c)) for c in frame.columns) + r" \\"
    body = [" & ".join(_tex(text_cell(v)) for v in row) + r" \\"
            for row in frame.itertuples(index=False)]
    return "\n".join([r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule", head,
                      r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]) + "\n"


def render_markdown(table: pd.DataFrame, fails: pd.DataFrame, notes: list[str],
                    baseline: str, n_runs: int, sources: Sequence[str],
                    reference_arm: str = REAL_REFERENCE) -> str:
    parts = [f"# dfkd report\n\nRuns gathered: {n_runs} from {', '.join(map(str, sources))}. "
             "student_rmse on the real test rows (standardised target); mean ± sd (ddof 1) over "
             f"seeds; ratio = mean of student/teacher RMSE; wins = seeds where the arm's RMSE is "
             f"below the baseline arm `{baseline}`'s on the same seed (two-sided paired test). "
             f"real-data reference = the mean RMSE of arm `{reference_arm}` (the same student on "
             "the training rows) over the seeds paired with the cell; ratio to reference = mean "
             "of the arm's RMSE over the reference's, seed by seed.\n"]
    if "paper_mean" in table.columns:
        parts.append("paper = the published per-seed values' mean ± sd (the paper selected by "
                     "validation, as selection=val); diff = ours - paper.\n")
    parts.append("## Summary\n\n" + markdown_table(display(table)))
    parts.append(f"\n## Failed or incomplete runs ({len(fails)})\n\n" + markdown_table(fails))
    if notes:
        parts.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# plots (optional: matplotlib)


def plot(runs: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[Path]:
    """RMSE per arm with error bars (one figure per dataset, a panel per student) and learning
    curves from history.csv (one figure per dataset and student)."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plots needs matplotlib: pip install 'dfkd-cli[plots]' "
                        "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, path: Path) -> Path:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    done = table[table["n"] > 0]
    for dataset, by_dataset in done.groupby("dataset", sort=False):
        students = list(dict.fromkeys(by_dataset["student_hidden"]))
        fig, axes = plt.subplots(1, len(students), figsize=(5 * len(students), 4), squeeze=False)
        for ax, student in zip(axes[0], students):
            cells = by_dataset[by_dataset["student_hidden"] == student]
            arms = list(dict.fromkeys(cells["arm"]))
            selections = list(dict.fromkeys(cells["selection"]))
            for j, selection in enumerate(selections):
                sub = cells[cells["selection"] == selection].set_index("arm").reindex(arms)
                xs = [i + (j - (len(selections) - 1) / 2) * 0.2 for i in range(len(arms))]
                ax.errorbar(xs, sub["rmse_mean"], yerr=sub["rmse_sd"].fillna(0), fmt="o",
                            capsize=3, label=f"selection={selection}")
            teacher = cells["teacher_rmse_mean"].mean()
            ax.axhline(teacher, color="grey", linestyle=":", label="teacher")
            ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
            ax.set_title(f"{dataset}, student {student}")
            ax.set_ylabel("test RMSE (standardised)")
            ax.legend(fontsize="small")
        written.append(save(fig, folder / f"rmse_{dataset}.png"))

    ok = runs[(runs["status"] == "ok") & (runs.get("command") == "distill")]
    for (dataset, student), group in ok.groupby(["dataset", "student_hidden"], sort=False):
        curves = []
        for _, row in group.iterrows():
            path = Path(row["run_dir"]) / HISTORY
            if path.is_file():
                hist = pd.read_csv(path)
                hist["arm"], hist["selection"] = row["arm"], row["selection"]
                curves.append(hist)
        if not curves:
            continue
        hist = pd.concat(curves, ignore_index=True)
        panels = [c for c in ("loss", "val_rmse") if c in hist.columns]
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        for ax, column in zip(axes[0], panels):
            # selection only picks which weights are kept: the curves are per arm
            for arm, h in hist.groupby("arm", sort=False):
                mean = h.groupby("epoch")[column].mean()
                if mean.notna().any():
                    ax.plot(mean.index, mean.values, label=str(arm))
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"{column} (mean over seeds)")
            ax.set_title(f"{dataset}, student {student}: {column}")
            ax.legend(fontsize="x-small")
        written.append(save(fig, folder / f"curves_{dataset}_{student}.png"))
    return written


# ---------------------------------------------------------------------------------------------
# entry points


def write_report(paths: Sequence[str | Path], out: str | Path | None = None,
                 baseline: str = BASELINE, reference: str | Path | None = None,
                 by: Sequence[str] = (), plots: bool = False,
                 reference_arm: str = REAL_REFERENCE) -> dict:
    """Gather, summarise and write report.csv / .md / .tex and runs.csv into `out` (default: the
    first path). Returns the pieces (runs, table, failures, notes, markdown, written paths)."""
    ref = read_reference(reference) if reference else None  # a bad file fails before any work
    runs = gather(paths)
    table, notes = summarize(runs, baseline, by, ref, reference_arm)
    fails = failures(runs)
    out = Path(out) if out is not None else Path(paths[0])
    if out.is_file():
        out = out.parent
    out.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(table, fails, notes, baseline, len(runs), paths, reference_arm)
    write_csv(table, out / "report.csv")
    write_csv(runs.drop(columns=["mtime"], errors="ignore").convert_dtypes(), out / "runs.csv")
    for name, text in (("report.md", markdown), ("report.tex", latex_table(display(table)))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    written = [out / name for name in OUTPUTS]
    if plots:
        written += plot(runs, table, out)
    return {"runs": runs, "table": table, "failures": fails, "notes": notes,
            "markdown": markdown, "written": written}


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
                        help=f"the arm the others are paired against (default: {BASELINE})")
    parser.add_argument("--reference-arm", default=REAL_REFERENCE, metavar="ARM",
                        help="the real-data reference arm every other cell is set against "
                             f"(ratio_to_reference; default: {REAL_REFERENCE})")
    parser.add_argument("--reference", metavar="FILE",
                        help="the authors' per-seed CSV (dataset, student_hidden, seed, teacher, "
                             "random_gaussian, ...): adds the published mean per cell")
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
    try:
        result = write_report(args.paths, args.out, args.baseline, args.reference, args.by,
                              args.plots, args.reference_arm)
    except UserError as exc:
        print(f"dfkd report: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(result["markdown"])
    print("wrote " + ", ".join(str(p) for p in result["written"]))
    return 0
