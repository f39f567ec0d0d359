"""The names an arm carries in tables and reports: its label, and its alpha schedule's."""

from __future__ import annotations

from dfkd_cli.strategies import STRATEGIES


def alpha_label(cfg) -> str:
    """decreasing | increasing | constant<value>, with `-h<horizon>` when alpha moves over a
    horizon of its own (alpha.horizon)."""
    if cfg.schedule == "constant":
        return f"constant{cfg.value:g}"
    horizon = cfg.get("horizon")
    return cfg.schedule + (f"-h{horizon}" if horizon else "")


def arm_label(cfg) -> str:
    """The arm's name in tables: `label` when set (the arm presets set it), else
    <strategy>_<alpha>_m<batch size>."""
    strategy = STRATEGIES[cfg.strategy.name].label(cfg.strategy)
    return cfg.label or f"{strategy}_{alpha_label(cfg.alpha)}_m{cfg.batch_size}"
