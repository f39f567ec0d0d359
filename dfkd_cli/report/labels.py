"""The names an arm carries in tables and reports: its label, and its alpha schedule's."""

from __future__ import annotations

from dfkd_cli.strategies import STRATEGIES


def alpha_label(cfg) -> str:
    return f"constant{cfg.value:g}" if cfg.schedule == "constant" else cfg.schedule


def arm_label(cfg) -> str:
    """The arm's name in tables: `label` when set (the arm presets set it), else
    <strategy>_<alpha>_m<batch size>."""
    strategy = STRATEGIES[cfg.strategy.name].label(cfg.strategy)
    return cfg.label or f"{strategy}_{alpha_label(cfg.alpha)}_m{cfg.batch_size}"
