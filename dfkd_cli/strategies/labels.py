"""The names an arm carries in tables (metrics.csv's `arm` and `alpha`): a run computes them from
its strategy, its alpha schedule and its batch size, and the report reads them from its rows (or,
for a job that left no row, from its saved config)."""

from __future__ import annotations

from typing import Any

from dfkd_cli.strategies.schemas import SCHEMAS


def alpha_label(alpha: Any) -> str:
    """decreasing | increasing | constant<value>, with `-h<horizon>` when alpha moves over a
    horizon of its own; `alpha` has the alpha config's schedule, value and horizon."""
    if alpha.schedule == "constant":
        return f"constant{alpha.value:g}"
    horizon = getattr(alpha, "horizon", None)
    return alpha.schedule + (f"-h{horizon}" if horizon else "")


def arm_label(label: str | None, strategy: Any, alpha: Any, batch_size: int) -> str:
    """The arm's name in tables: `label` when set (the arm presets set it), else
    <strategy>_<alpha>_m<batch size> (`strategy`: its config)."""
    name = SCHEMAS[strategy.name].label(strategy)
    return label or f"{name}_{alpha_label(alpha)}_m{batch_size}"
