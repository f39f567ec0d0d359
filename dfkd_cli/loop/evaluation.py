"""How a distilled member is scored once training ends: on the real test and validation rows
(when the run has a dataset) and, data-free, on fresh N(0, I) draws; and the status a run that
ended ok gets when its student ended far worse than where it started."""

from __future__ import annotations

import torch

from dfkd_cli.data.datasets import Split, stacked
from dfkd_cli.nets import metrics
from dfkd_cli.utils.rng import Streams

GAUSSIAN_ROWS = 10_000  # N(0, I) draws of fidelity_rmse_gaussian
GAUSSIAN_STREAM = 7_919_000  # offset of their random stream from the member's seed
# status=unstable when the student's fidelity RMSE on those draws ends more than this many
# times the untrained student's (docs/reliability.md says why 10)
UNSTABLE_RATIO = 10.0


@torch.no_grad()
def gaussian_fidelity(teacher, student, seeds: list[int], rows: int = GAUSSIAN_ROWS
                      ) -> torch.Tensor:
    """Per member and output, the RMSE between S and T on fresh N(0, I) draws (K, k), whatever
    prior the run drew from: the data-free measure of how well the student copies the teacher,
    the same for every run (fidelity_rmse_gaussian)."""
    x = Streams([s + GAUSSIAN_STREAM for s in seeds], student.params[0].device).randn(
        rows, teacher.input_dim)
    return metrics.rmse(metrics.predict(student, x), metrics.predict(teacher.module, x))


def ratio_to_untrained(fidelity: torch.Tensor, untrained: torch.Tensor) -> list[float]:
    """Per member, the student's gaussian fidelity RMSE over the untrained student's (both
    (K, k), pooled over the outputs): `prior_ratio` in metrics.csv."""
    return (fidelity.pow(2).mean(dim=1) / untrained.pow(2).mean(dim=1)).sqrt().tolist()


def final_status(status: str, ratio: float) -> str:
    """A run that ended ok is `unstable` when its ratio to the untrained student is above
    UNSTABLE_RATIO (or not a number): its loss ended far above where it started."""
    return "unstable" if status == "ok" and not ratio <= UNSTABLE_RATIO else status


def test_scores(splits: list[Split] | None, teacher, student, targets: list[str]
                ) -> list[dict[str, float]]:
    """Per member, teacher / student / fidelity scores on the real test rows, and the RMSEs on
    the validation rows (`val_rmse` the student's, `teacher_val_rmse`: what a user with labelled
    rows could choose a recipe by, never the test rows); none without a dataset."""
    if splits is None:
        return [{} for _ in teacher.scalers]
    x_test, y_test = stacked(splits, "test")
    x_val, y_val = stacked(splits, "val")
    t_pred = metrics.predict(teacher.module, x_test)
    s_pred = metrics.predict(student, x_test)
    val = {name: metrics.rmse(metrics.predict(model, x_val), y_val)
           for name, model in (("teacher", teacher.module), ("student", student))}
    return [metrics.scores("teacher", t_pred[k], y_test[k], targets)
            | metrics.scores("student", s_pred[k], y_test[k], targets, part.scaler.y_std)
            | metrics.columns("fidelity_rmse", metrics.rmse(s_pred[k], t_pred[k]), targets)
            | metrics.columns("teacher_val_rmse", val["teacher"][k], targets)
            | metrics.columns("val_rmse", val["student"][k], targets)
            for k, part in enumerate(splits)]
