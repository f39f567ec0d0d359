"""Every run below some run or sweep directories -> one pandas table of runs (`dfkd report`).

Every `metrics.csv` below the given paths (single runs, sweeps, population members, partial or
failed sweeps alike) is a row; a Hydra job directory that left none (still running, killed) is a
status=missing row. A row that did not end ok gets its cell (dataset, arm, ...) from the job's
saved config (.hydra/), and every row its job directory and command-line overrides, from which
config columns (`add_config_columns`) and a sweep's axes (`swept_keys`) are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
from omegaconf import OmegaConf

from dfkd_cli.errors import UserError
from dfkd_cli.loop.resume import MAY_CHANGE
from dfkd_cli.nets.seam import config_arch_name
from dfkd_cli.report.labels import arm_label
from dfkd_cli.teachers.store import arch_label
from dfkd_cli.utils.run_tables import METRICS

MISSING = "missing"  # a job directory with a config but no metrics.csv below it
WRITES_METRICS = ("distill", "train-teacher")  # commands whose jobs end with a metrics.csv


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
    """A column per config key (e.g. optimizer.lr) from each row's job config (.hydra/); a key
    that is a metrics column already is filled in where a row lacks it (a failed job's row, so
    that it counts in the cell it belongs to), as a number where the column holds numbers."""
    present = [k for k in keys if k in runs.columns and runs[k].isna().any()]
    filled = add_config_columns(runs[[c for c in runs.columns if c not in present]], present) \
        if present and "job_dir" in runs.columns else None
    for key in present if filled is not None else ():
        value = filled[key]
        if pd.api.types.is_numeric_dtype(runs[key]):
            value = pd.to_numeric(value, errors="coerce")
        runs = runs.assign(**{key: runs[key].where(runs[key].notna(), value)})
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
    return runs
