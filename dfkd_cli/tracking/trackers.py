"""Experiment trackers, the `logger=` config group: TensorBoard event files and MLflow runs
beside the CSV files every run writes.

Each configs/logger/<name>.yaml adds one entry under `logger` (lightning-hydra-template's
convention), so `logger=[csv,tensorboard,mlflow]` composes several. `csv` stands for metrics.csv
and history.csv, which every run writes whatever `logger` lists; an entry with a `_target_` names a
tracker class, built with hydra.utils.instantiate (a `--config-dir` can add one of its own).
`dfkd distill` calls them through one object, `Trackers`: when the run starts (the composed config
and the members), at every log point (each member's new history rows, step = epoch) and at the
end (each member's metrics rows and files). A population is one tracker run per member.

A tracker that fails (a missing or broken package, a store that cannot be written) logs one
warning and is dropped for the rest of the run: the run and its CSV files never depend on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dfkd_cli.utils import run_tables as tables
from dfkd_cli.utils.files import atomic_path, exclusive_lock

log = logging.getLogger(__name__)

# In a member's directory: the MLflow store and run its tracker logged to (for `dfkd export`).
MLFLOW_RUN = "mlflow_run.json"
# A member's status -> the MLflow run status it ends with.
MLFLOW_STATUS = {"ok": "FINISHED", "interrupted": "KILLED"}


@dataclass
class RunInfo:
    """What a tracker needs to open its runs: the composed config as flat params, and per
    member its seed and directory (one member, the run directory itself, for seed=N)."""

    params: dict[str, str | int | float | bool]
    seeds: list[int]
    dirs: list[Path]

    def member_params(self, k: int) -> dict[str, str | int | float | bool]:
        return self.params | {"seed": self.seeds[k]}


def flat_params(config: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """A run's config (plain containers; `logger` left out) as dotted keys with scalar values;
    lists and null as JSON text: what a tracker logs as the run's parameters."""
    container = {k: v for k, v in config.items() if k != "logger"}
    params: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        elif isinstance(node, (str, int, float, bool)):
            params[prefix[:-1]] = node
        else:
            params[prefix[:-1]] = json.dumps(node)

    walk("", container)
    return params


def final_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """A member's metrics rows as tracker metrics: every finite number. With several rows
    (selection=both) each name gets its selection as a prefix: last/student_rmse."""
    metrics = {}
    for row in rows:
        prefix = f"{row['selection']}/" if len(rows) > 1 else ""
        metrics |= {prefix + name: float(value) for name, value in row.items()
                    if isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and math.isfinite(value)}
    return metrics


def history_metrics(row: dict[str, Any]) -> dict[str, float]:
    """A history row's finite numbers, less the epoch (the step)."""
    return {name: float(value) for name, value in row.items()
            if name != "epoch" and isinstance(value, numbers.Real) and math.isfinite(value)}


class Trackers:
    """The run's trackers, called as one (the module docstring); a context manager that closes
    every tracker still open, as failed, when the run raises."""

    def __init__(self, logger: dict[str, Any], config: dict[str, Any], seeds: list[int],
                 dirs: list[Path]):
        """`logger`: the `logger=` group (tracker name -> its config); `config`: the run's
        config as plain containers, logged as its parameters."""
        self.entries = {name: entry for name, entry in (logger or {}).items()
                        if entry and "_target_" in entry}
        self.info = RunInfo(flat_params(config), seeds, dirs) if self.entries else None
        self.active: dict[str, Any] = {}
        self.logged = [0] * len(seeds)  # history rows handed on so far, per member

    def __enter__(self) -> Trackers:
        from hydra.utils import instantiate

        for name, entry in self.entries.items():
            self.active[name] = None
            self._call(name, lambda: self.active.__setitem__(name, instantiate(entry)))
            self._call(name, lambda: self.active[name].start(self.info))
        return self

    def __exit__(self, *exc) -> None:
        for name in list(self.active):
            self._call(name, lambda: self.active[name].close(ok=False))
        self.active.clear()

    def _call(self, name: str, action) -> None:
        """Run one tracker's action; on any error warn once and drop that tracker."""
        if name not in self.active:
            return
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a tracker never stops the run
            log.warning("logger %s disabled: %s: %s (the run and its CSV files are not affected)",
                        name, type(exc).__name__, exc)
            tracker = self.active.pop(name)
            try:
                if tracker is not None:
                    tracker.close(ok=False)
            except Exception:  # noqa: BLE001 - already reported above
                pass

    def history(self, histories: list[list[dict[str, Any]]]) -> None:
        """Hand each member's history rows that are new since the last call to every tracker
        (a resumed run hands the rows it restored first)."""
        for k, rows in enumerate(histories):
            for row in rows[self.logged[k]:]:
                metrics, step = history_metrics(row), int(row["epoch"])
                for name in list(self.active):
                    self._call(name, lambda: self.active[name].history(k, metrics, step))
            self.logged[k] = len(rows)

    def finish(self, frame: pd.DataFrame) -> None:
        """The end: each member's metrics rows (frame, one or two rows per seed), its status
        and its files (students and tables) to every tracker, then close them."""
        if not self.active:
            return
        for k, (seed, member_dir) in enumerate(zip(self.info.seeds, self.info.dirs)):
            rows = frame[frame.seed == seed].to_dict("records")
            metrics, step = final_metrics(rows), int(rows[0].get("epochs_run", 0))
            files = [*sorted(member_dir.glob("student*.pt")), member_dir / tables.METRICS,
                     member_dir / tables.HISTORY]
            files = [f for f in files if f.is_file()]
            for name in list(self.active):
                self._call(name, lambda: self.active[name].finish(k, metrics, step,
                                                                  rows[0]["status"], files))
        for name in list(self.active):
            self._call(name, lambda: self.active[name].close(ok=True))
        self.active.clear()


class TensorBoard:
    """Event files in each member's directory (TensorBoard: `tensorboard --logdir outputs`): the
    history per logged epoch, the final metrics at the last epoch, and the config as hparams
    with the final metrics (the HParams tab). Written with torch.utils.tensorboard (needs the
    `tensorboard` package)."""

    def __init__(self, flush_secs: int = 30):
        self.flush_secs = flush_secs
        self.writers: list = []

    def start(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.info = info
        self.writers = [SummaryWriter(log_dir=str(d), flush_secs=self.flush_secs)
                        for d in info.dirs]

    def history(self, k: int, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writers[k].add_scalar(name, value, step)

    def finish(self, k: int, metrics: dict[str, float], step: int, status: str,
               files: list[Path]) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self.writers[k]
        for summary in hparams(self.info.member_params(k), metrics):
            writer.file_writer.add_summary(summary)
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)

    def close(self, ok: bool) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI (relative to the working directory with
    three slashes, absolute with four), else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


class MLflow:
    """An MLflow run per member in a local store, no server (default: the SQLite database
    outputs/mlflow/mlflow.db, artifacts beside it): the composed config as params (seed = the
    member's), the history as metrics per epoch, the final metrics, and the student checkpoints,
    metrics.csv and history.csv as artifacts (`dfkd export` adds its files under export/, found
    through mlflow_run.json in the member's directory). A population's members are nested under a run for
    the job, which gets the mean of each final metric over the members. See them with the full
    `mlflow` package: `mlflow ui --backend-store-uri sqlite:///outputs/mlflow/mlflow.db`."""

    def __init__(self, tracking_uri: str, experiment_name: str = "dfkd",
                 artifact_location: str | None = None, run_name: str | None = None):
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.artifact_location, self.run_name = artifact_location, run_name
        self.parent: str | None = None
        self.runs: list[str] = []
        self.finals: list[dict[str, float]] = []

    def start(self, info: RunInfo) -> None:
        check_reachable(self.tracking_uri)
        from mlflow import MlflowClient

        database = sqlite_path(self.tracking_uri)
        # parallel jobs (joblib) opening a new SQLite store would each create its tables: one at
        # a time, under a lock beside the database
        lock = (exclusive_lock(database.with_name(f".{database.name}.lock")) if database
                else contextlib.nullcontext())
        with lock:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment = self._experiment(database)
        name = self.run_name or str(info.dirs[0].parent if len(info.dirs) > 1 else info.dirs[0])
        if len(info.dirs) > 1:
            self.parent = self._open(experiment, name, info.params, info.dirs[0].parent, {})
        self.runs = [self._open(experiment, f"{name}/seed{s}" if self.parent else name,
                                info.member_params(k), d,
                                {"mlflow.parentRunId": self.parent} if self.parent else {})
                     for k, (s, d) in enumerate(zip(info.seeds, info.dirs))]
        uri = f"sqlite:///{database.resolve()}" if database else self.tracking_uri
        for run_id, member_dir in zip(self.runs, info.dirs):
            with atomic_path(member_dir / MLFLOW_RUN) as tmp:
                tmp.write_text(json.dumps({"tracking_uri": uri, "run_id": run_id}) + "\n")

    def _experiment(self, database: Path | None) -> str:
        """The experiment's id, created on first use (artifacts in `artifact_location`, else
        beside a SQLite database). Two jobs creating it at once: the loser reads it."""
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        location = self.artifact_location or (
            (database.parent / "artifacts").resolve().as_uri() if database else None)
        try:
            return self.client.create_experiment(self.experiment_name, location)
        except Exception:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                raise
            return found.experiment_id

    def _open(self, experiment: str, name: str, params: dict, run_dir: Path,
              tags: dict[str, str]) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(experiment, run_name=name,
                                     tags=tags | {"run_dir": str(run_dir.resolve())})
        self.client.log_batch(run.info.run_id,
                              params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def _log(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step)
                                               for k, v in metrics.items()])

    def history(self, k: int, metrics: dict[str, float], step: int) -> None:
        self._log(self.runs[k], metrics, step)

    def finish(self, k: int, metrics: dict[str, float], step: int, status: str,
               files: list[Path]) -> None:
        run_id = self.runs[k]
        self._log(run_id, metrics, step)
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_tag(run_id, "status", status)
        self.client.set_terminated(run_id, MLFLOW_STATUS.get(status, "FAILED"))
        self.finals.append(metrics)

    def close(self, ok: bool) -> None:
        """Mark runs left open (the run raised) as failed; give the job's run the mean of each
        final metric over its members."""
        if ok and self.parent and self.finals:
            shared = set.intersection(*(set(m) for m in self.finals))
            self._log(self.parent, {name: sum(m[name] for m in self.finals) / len(self.finals)
                                    for name in sorted(shared)}, 0)
        for run_id in [*self.runs[len(self.finals):], *([self.parent] if self.parent else [])]:
            self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
        self.runs, self.parent = [], None


def log_export(run_dir: Path, files: list[Path], tracking_uri: str) -> None:
    """`dfkd export --mlflow URI` of a run that logged to MLflow (its directory holds
    mlflow_run.json): the exported files join that run's artifacts under export/, in the store
    at `tracking_uri`, which the user names in the command (never the address the file holds:
    a file's content never makes dfkd reach a server or write elsewhere). A store that cannot
    be reached, or a run it does not hold, only warns: the exports are written already."""
    record = run_dir / MLFLOW_RUN
    if not record.is_file():
        log.warning("exports not logged to MLflow: %s has no %s (the run did not log to "
                    "MLflow)", run_dir, MLFLOW_RUN)
        return
    try:
        run_id = json.loads(record.read_text())["run_id"]
        if not isinstance(run_id, str) or not run_id.isalnum():
            raise ValueError(f"{record} holds no MLflow run id")
        check_reachable(tracking_uri)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        client.get_run(run_id)  # the store holds this run, else no artifact goes anywhere
        for path in files:
            client.log_artifact(run_id, str(path), "export")
    except Exception as exc:  # noqa: BLE001 - the export itself has succeeded
        log.warning("exports not logged to MLflow (%s: %s)", type(exc).__name__, exc)


CONNECT_TIMEOUT_S = 2.0  # one connection attempt to a tracking server; then the run goes on


def check_reachable(uri: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """For an http(s) tracking URI: one TCP connection attempt to its host and port (at most
    `timeout` seconds), and MLflow's own requests set to fail fast (no retries, a short
    timeout), so a server that is down costs seconds, not minutes of retries. A ConnectionError
    when it cannot be reached; any other URI (a local store) passes."""
    import os
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(timeout, 1) * 5)))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"tracking server {parts.hostname}:{port} cannot be reached "
                              f"({exc.strerror or exc})") from exc
