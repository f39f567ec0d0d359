"""Hydra callbacks (registered in configs/hydra/dfkd.yaml under hydra.callbacks).

SweepSummary writes `dfkd report`'s files (report.csv, report.md, report.tex and runs.csv, every
job's metrics rows concatenated) into the sweep directory when a multirun ends. Hydra calls
on_multirun_end in the process that ran the sweeper, after the launcher has returned every job,
so the summary is written the same way whichever launcher ran the jobs (basic, joblib,
submitit, ray, ...). A summary that cannot be written only logs a warning: the jobs' own files
are the record, and `dfkd report <sweep dir>` rebuilds the summary at any time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dfkd_cli import report
from dfkd_cli.errors import UserError

log = logging.getLogger("dfkd")


class SweepSummary(Callback):
    """At the end of a multirun, summarise the sweep directory into itself."""

    def __init__(self, baseline: str = report.BASELINE, reference: str | None = None,
                 enabled: bool = True, reference_arm: str = report.REAL_REFERENCE) -> None:
        self.baseline = baseline
        self.reference = reference
        self.enabled = enabled
        self.reference_arm = reference_arm

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        reference = self.reference if self.reference and Path(self.reference).is_file() else None
        if self.reference and reference is None:
            log.warning("sweep summary: reference %s not found; summarising without it",
                        self.reference)
        try:
            result = report.write_report([sweep_dir], sweep_dir, self.baseline, reference,
                                         reference_arm=self.reference_arm)
        except UserError as exc:
            log.warning("sweep summary not written: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - never turn a finished sweep into a failure
            log.warning("sweep summary not written (%s: %s); run `dfkd report %s`",
                        type(exc).__name__, exc, sweep_dir)
            return
        runs, fails = result["runs"], result["failures"]
        log.info("sweep summary: %d runs, %d failed or incomplete -> %s", len(runs), len(fails),
                 sweep_dir / "report.md")
        for _, row in fails.iterrows():
            log.warning("not ok: %s (%s) %s", row.get("run_dir"), row.get("status"),
                        row.get("error", ""))
