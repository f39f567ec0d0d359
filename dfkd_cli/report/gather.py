"""Every run below some run or sweep directories -> one pandas table of runs (`dfkd report`).

Every `metrics.csv` below the given paths (single runs, sweeps, population members, partial or
failed sweeps alike) is a row; a Hydra job directory that left none (still running, killed) is a
status=missing row. A row that did not end ok gets its cell (dataset, arm, ...) from the job's
saved config (.hydra/), and every row its job directory and command-line overrides, from which
config columns (`add_config_columns`) and a sweep's axes (`swept_keys`) are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from dfkd_cli.errors import UserError
from dfkd_cli.nets.architecture import config_arch_name
from dfkd_cli.strategies.labels import arm_label
from dfkd_cli.teachers.store import arch_label
from dfkd_cli.utils import yaml_data
from dfkd_cli.utils.run_tables import METRICS, with_current_names

MISSING = "missing"  # a job directory with a config but no metrics.csv below it
WRITES_METRICS = ("distill", "train-teacher")  # commands whose jobs end with a metrics.csv
# keys whose values never split a report cell: the replicates (seeds) and the keys that do not
# change what a run computes (display, speed, where the same data and teachers are found, and
# resume / overwrite themselves); tests/test_report.py holds them against loop/resume.MAY_CHANGE
NOT_AXES = ("seed", "seeds", "resume", "overwrite", "progress", "progress_every", "threads",
            "keep_freed_memory", "checkpoint_every", "data_dir", "teacher_store")
CONFIG_BYTES = 1 << 20  # a saved config.yaml is a few kB


class Saved(dict):
    """A job's saved config as plain data whose keys read as attributes too (`cfg.dataset.name`)
    for the label functions; nothing in it is ever resolved (an `${oc.env:...}` stays text)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return _saved(self[key])
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return _saved(super().get(key, default))


def _saved(value: Any) -> Any:
    return Saved(value) if isinstance(value, dict) and not isinstance(value, Saved) else value


def _read_yaml(path: Path) -> Any:
    """A YAML file of a job directory as data (no anchors, bounded size), or None when it is
    damaged, a link or too large (it only loses the extra columns)."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return yaml_data.load_file(path, max_bytes=CONFIG_BYTES)
    except UserError:
        return None


def _job_config(run_dir: Path) -> tuple[Saved | None, Path | None]:
    """The composed config Hydra saved for the job that wrote `run_dir` (a population member's
    directory is seed<N>/ below the job's), or None."""
    for folder in (run_dir, run_dir.parent):
        path = folder / ".hydra" / "config.yaml"
        if path.is_file():
            data = _read_yaml(path)
            return (Saved(data) if isinstance(data, dict) else None), folder
    return None, None


def _override_list(job_dir: Path | None) -> list[str]:
    data = None if job_dir is None else _read_yaml(job_dir / ".hydra" / "overrides.yaml")
    return [str(o) for o in data] if isinstance(data, list) else []


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


def _config_value(config: dict | None, key: str, override: str | None) -> str | None:
    """A config key's value in a job's saved config, as written (a group's: its override)."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict) or value is None:
        return override
    return str(value)


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
        saved, overrides = cache[job]
        for k in keys:
            values[k].append(_config_value(saved, k, overrides.get(k)))
    return runs.assign(**values)


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """The overridden keys whose values differ between the runs' jobs (a sweep's axes), except
    the seeds (replicates) and keys that do not change a result (NOT_AXES)."""
    if "job_dir" not in runs.columns:
        return []
    seen: dict[str, set] = {}
    jobs = [Path(j) for j in runs["job_dir"].dropna().unique()]
    per_job = [_override_keys(job) for job in jobs]
    for overrides in per_job:
        for key, value in overrides.items():
            seen.setdefault(key, set()).add(value)
    ignored = set(NOT_AXES)
    return [k for k, values in seen.items() if k.split(".")[0] not in ignored
            and (len(values) > 1 or any(k not in o for o in per_job))]


def _cell_of(saved: Saved | None) -> dict:
    """dataset / student_hidden / arm / selection / seed(s) of a job from its saved config, for
    rows that do not carry them (a failed job's row, a job that left no row)."""
    if saved is None:
        return {}
    out = {"command": saved.get("command")}
    try:
        out["dataset"] = saved.dataset.name
        if saved.get("command") == "distill":
            out["arm"] = arm_label(saved.get("label"), saved.strategy, saved.alpha,
                                   saved.batch_size)
            out["selection"] = saved.selection
            out["student_hidden"] = config_arch_name(saved.student)
        out["teacher_hidden"] = arch_label(saved.teacher)
        out["seed"] = saved.seed
        if saved.get("seeds"):
            out["seeds"] = ",".join(str(s) for s in saved.seeds)
    except Exception:  # noqa: BLE001 - a key missing or of a wrong type: keep what we have
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
        frame = with_current_names(pd.read_csv(path))
        if frame.empty:
            raise ValueError("no rows")
    except Exception as exc:  # noqa: BLE001 - a half-written or damaged file is a failed run
        frame = pd.DataFrame([{"status": "unreadable", "error": f"{type(exc).__name__}: {exc}"}])
    frame["run_dir"] = str(path.parent)
    frame["mtime"] = path.stat().st_mtime
    saved, job_dir = _job_config(path.parent)
    if "status" not in frame.columns or (frame["status"] != "ok").any():
        frame = _fill(frame, _cell_of(saved))
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
                    saved, _ = _job_config(job)
                    if saved is None or saved.get("command") not in WRITES_METRICS:
                        continue  # e.g. a dfkd probe run: it writes probe.csv
                    row = {"status": MISSING, "error": "no metrics.csv (still running, killed, "
                           "or stopped before writing)", "run_dir": str(job),
                           **_cell_of(saved), "overrides": _overrides(job), "job_dir": str(job)}
                    frames.append(pd.DataFrame([row]))
    if not frames:
        raise UserError(f"no {METRICS} below {', '.join(map(str, paths))}")
    runs = pd.concat(frames, ignore_index=True, sort=False)
    if "status" not in runs.columns:
        runs["status"] = "ok"
    runs["status"] = runs["status"].fillna("unknown")
    return runs
