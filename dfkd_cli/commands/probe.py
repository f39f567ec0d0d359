"""`dfkd probe`: the strategies' synthetic inputs side by side, for one teacher and one student.

The diagnostic comparison of Zhou & Chiam (2023): which inputs each strategy hands the student,
measured by the per-sample squared disagreement (T(x) - S(x))^2 it carries and its norm ||x||.

1. The student is trained for `epochs` epochs of `strategy` (random by default) exactly as
   `dfkd distill` with the same keys would train it, then frozen.
2. Each strategy under `strategies` (label -> strategy config, from configs/strategy/) starts from
   the run's seed, is prepared (`prepare`) and updated once per epoch for the same `epochs`
   against the frozen student (so a generator has had as many steps as it would have had by
   then), and draws `samples` inputs in batches of `batch_size` (m).
   Every strategy (the student's too) draws its x_p from `prior` (gaussian N(0, I) by default;
   auto / copula / correlated as distill's prior=).
3. One row per strategy (and one for the real test rows, the reference the strategies stand in
   for): the mean and the `quantiles` of (T - S)^2 and of ||x||, the fraction outside the
   teacher's feature box, the mean L-inf distance from the starting point (strategies that have
   one), the mean and sd of the teacher's predictions (raw units) and the milliseconds per
   batch. Printed, and written to probe.csv in the run directory; the student's own training is
   in history.csv.
4. For an image-shaped dataset (dataset.input_shape = (C, H, W)), or with figures=true: a grid of
   each strategy's first `images` samples (probe_images.png; needs an image shape) and the
   histogram of the teacher's predictions on each strategy's samples (probe_predictions.png).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dfkd_cli.commands import records
from dfkd_cli.data.datasets import load_table, stacked
from dfkd_cli.errors import UserError
from dfkd_cli.loop.student_loop import build_student, train_student
from dfkd_cli.nets import metrics
from dfkd_cli.report import probe_figures
from dfkd_cli.strategies.base import per_sample
from dfkd_cli.strategies.registry import build_strategy
from dfkd_cli.teachers import loader
from dfkd_cli.utils import run_tables as tables
from dfkd_cli.utils import runtime
from dfkd_cli.utils.files import write_csv
from dfkd_cli.utils.rng import Streams

log = logging.getLogger(__name__)

PROBE = "probe.csv"
REFERENCE = "test_rows"  # the label of the real test rows' row


def quantile_name(prefix: str, q: float) -> str:
    return f"{prefix}_q{100 * q:g}"


def summarize(label: str, gap: torch.Tensor, norm: torch.Tensor, outside: torch.Tensor | None,
              dist: torch.Tensor | None, quantiles: list[float]) -> dict[str, Any]:
    """One table row from per-sample gaps, norms, box flags and start distances (1-D tensors)."""
    gap, norm = gap.double().cpu(), norm.double().cpu()
    qs = torch.tensor(quantiles, dtype=torch.float64)
    row: dict[str, Any] = {"strategy": label, "samples": len(gap), "gap_mean": float(gap.mean())}
    row |= {quantile_name("gap", q): float(v) for q, v in zip(quantiles, gap.quantile(qs))}
    row["xnorm_mean"] = float(norm.mean())
    row |= {quantile_name("xnorm", q): float(v) for q, v in zip(quantiles, norm.quantile(qs))}
    row["outside_box"] = float(outside.double().mean()) if outside is not None else math.nan
    row["start_dist_mean"] = float(dist.double().mean()) if dist is not None else math.nan
    return row


def measure(teacher, student, x: torch.Tensor, start: torch.Tensor | None, box
            ) -> dict[str, torch.Tensor]:
    """strategies.per_sample of a (1, n, d) batch as 1-D tensors, the teacher's outputs as
    "pred", its first output (standardised)."""
    out = {k: v[0] for k, v in per_sample(teacher, student, x, start, box).items()}
    out["pred"] = out.pop("teacher")[:, 0]
    return out


def probe_strategy(cfg, label: str, scfg, teacher, student, seed: int, device: torch.device,
                   train: tuple[torch.Tensor, torch.Tensor]
                   ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Prepare, warm up and sample one strategy (`train`: the split's training rows, for one
    that draws them) drawing from the run's prior; its table row and its samples: the teacher's
    predictions on all ("pred", standardised) and the first batch's inputs ("x")."""
    T, S, m = teacher.module, student, int(cfg.batch_size)
    rng = Streams([seed], device)
    try:
        strategy = build_strategy(scfg, teacher, rng, train, teacher.prior(cfg.prior, rng),
                                  image=teacher.images(cfg.dataset.input_shape, device))
    except UserError as exc:  # e.g. a box strategy with a teacher that has no box
        log.warning("probe: skipping %s: %s", label, exc)
        return {"strategy": label, "note": str(exc)}, {}
    strategy.prepare(T)
    for _ in range(cfg.epochs):
        strategy.update(T, S)
    parts: dict[str, list[torch.Tensor]] = {}
    started = time.perf_counter()
    batches = math.ceil(cfg.samples / m)
    for _ in range(batches):
        x = strategy.sample(T, S, m)
        parts.setdefault("x", [x[0, :cfg.images]])
        for key, value in measure(T, S, x, strategy.start, teacher.box).items():
            parts.setdefault(key, []).append(value)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    cat = {k: torch.cat(v)[:cfg.samples] for k, v in parts.items()}
    row = summarize(label, cat["gap"], cat["norm"], cat.get("outside"), cat.get("dist"),
                    list(cfg.quantiles))
    row["ms_per_batch"] = 1000 * elapsed / batches
    return row, {"pred": cat["pred"], "x": parts["x"][0]}


def run(cfg, run_dir: Path) -> pd.DataFrame:
    """`dfkd probe`: train the student, probe every strategy, write probe.csv."""
    if cfg.seeds:
        raise UserError("dfkd probe takes one teacher: use seed=<n> instead of seeds=[...]")
    device = runtime.resolve_device(cfg.device)
    seed = int(cfg.seed)
    table = load_table(cfg.dataset, cfg.data_dir)
    source = records.teacher_source(cfg)
    teacher = loader.load(source, [seed], table, device)
    part = loader.member_splits(source, teacher, table, [seed], device)[0]
    runtime.seed_everything(seed)
    rng = Streams([seed], device)
    _, student = build_student(cfg.student, cfg.dataset.input_shape, cfg.fast_path, teacher,
                               rng)
    train = stacked([part], "train")
    prior = teacher.prior(cfg.prior, rng)
    trainer = build_strategy(cfg.strategy, teacher, rng, train, prior,
                             image=teacher.images(cfg.dataset.input_shape, device))
    history, _ = train_student(records.loop_settings(cfg), teacher, student, trainer,
                               stacked([part], "val"))
    tables.write_history(run_dir, history[0])
    student.requires_grad_(False)
    x_test, y_test = stacked([part], "test")
    student_rmse = float(metrics.rmse(metrics.predict(student, x_test), y_test).mean())

    reference = measure(teacher.module, student, x_test, None, teacher.box)
    rows = [summarize(REFERENCE, reference["gap"], reference["norm"], reference.get("outside"),
                      None, list(cfg.quantiles))]
    samples = {REFERENCE: {"pred": reference["pred"], "x": x_test[0, :cfg.images]}}
    for label, scfg in cfg.strategies.items():
        row, samples[label] = probe_strategy(cfg, label, scfg, teacher, student, seed, device,
                                             train)
        rows.append(row)
    scaler = teacher.scalers[0]
    for row, drawn in zip(rows, samples.values()):
        if drawn:
            raw = drawn["pred"].double().cpu() * float(scaler.y_std[0]) + float(scaler.y_mean[0])
            row |= {"pred_mean": float(raw.mean()), "pred_sd": float(raw.std())}
    frame = pd.DataFrame(rows)
    frame.insert(0, "dataset", part.name)
    frame.insert(1, "seed", seed)
    frame["student_epochs"] = cfg.epochs
    frame["student_strategy"] = cfg.strategy.name
    frame["prior"] = prior.name  # auto resolved: copula or gaussian
    frame["student_rmse"] = student_rmse
    write_csv(frame, Path(run_dir) / PROBE)
    shape = list(cfg.dataset.input_shape or [])
    if cfg.figures or (cfg.figures is None and len(shape) >= 2):
        write_figures(run_dir, samples, teacher, part.targets[0], shape)
    shown = [c for c in frame.columns if c not in ("dataset", "seed", "student_epochs",
                                                   "student_strategy", "student_rmse")]
    print(f"dfkd probe: {part.name} seed {seed}, student after {cfg.epochs} epochs of "
          f"{cfg.strategy.name} (test RMSE {student_rmse:.4f}); per-sample (T - S)^2 and ||x||")
    print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return frame


def write_figures(run_dir: Path, samples: dict[str, dict[str, torch.Tensor]], teacher,
                  target: str, shape: list[int]) -> None:
    """probe_predictions.png (raw units) and, for an image shape, probe_images.png (raw pixels,
    grey scale over the teacher's box)."""
    scaler, drawn = teacher.scalers[0], {k: v for k, v in samples.items() if v}
    predictions = {k: (v["pred"].double().cpu() * float(scaler.y_std[0])
                       + float(scaler.y_mean[0])).numpy() for k, v in drawn.items()}
    probe_figures.prediction_histograms(predictions, target,
                                        Path(run_dir) / probe_figures.PREDICTIONS, REFERENCE)
    if len(shape) < 2:
        return
    raw = {k: (v["x"].cpu() * scaler.x_std + scaler.x_mean).numpy() for k, v in drawn.items()}
    if teacher.box is not None:
        low, high = ((bound[0].cpu() * scaler.x_std + scaler.x_mean) for bound in teacher.box)
        value_range = (float(low.min()), float(high.max()))
    else:
        values = np.concatenate(list(raw.values()))
        value_range = (float(values.min()), float(values.max()))
    probe_figures.image_grid(raw, shape, value_range, Path(run_dir) / probe_figures.IMAGES)
