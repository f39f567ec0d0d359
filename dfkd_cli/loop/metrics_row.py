"""A distilled member's metrics row (metrics.csv, one per selection), assembled in one place: its
columns in order, and the columns a person reads first."""

from __future__ import annotations

from typing import Any

# printed at the end of a run; every other column is in the file
SUMMARY = ["dataset", "seed", "arm", "strategy", "alpha", "selection", "teacher_rmse",
           "student_rmse", "fidelity_rmse", "fidelity_rmse_gaussian", "student_r2", "wall_s",
           "device", "status"]
UNTRAINED = ("no finite weights after training began: these are the untrained start's "
             "(selected_epoch -1)")


def distill_row(run: dict[str, Any], outcome: dict[str, Any], selection: str, selected: int,
                scores: dict[str, float], gaussian: dict[str, float], ending: dict[str, Any],
                interrupted: bool) -> dict[str, Any]:
    """One member's row for one selection, in the file's column order.

    `run`: what the run is (command, dataset, seed, arm / strategy / alpha labels, prior,
    domain, teacher_hidden, student_hidden, epochs, steps_per_epoch, batch_size);
    `outcome`: how its training ended (StudentLoop.outcome: epochs_run, stopped_epoch,
    stop_reason, diverged_epoch, nonfinite_skips); `selected`: the epoch whose weights it
    reports; `scores`: the real rows' scores (evaluation.test_scores); `gaussian`: the
    fidelity_rmse_gaussian columns; `ending`: wall_s, members, device, prior_ratio, status and
    teacher_path."""
    return {**{k: run[k] for k in ("command", "dataset", "seed", "arm", "strategy", "alpha")},
            "selection": selection,
            **{k: run[k] for k in ("prior", "domain", "teacher_hidden", "student_hidden",
                                   "epochs", "steps_per_epoch", "batch_size")},
            **{k: outcome[k] for k in ("epochs_run", "stopped_epoch", "stop_reason")},
            "selected_epoch": selected, **scores, **gaussian,
            **{k: ending[k] for k in ("wall_s", "members", "device", "prior_ratio", "status")},
            "note": UNTRAINED if selected < 0 and not interrupted else None,
            **{k: outcome[k] for k in ("diverged_epoch", "nonfinite_skips")},
            "teacher_path": ending["teacher_path"]}
