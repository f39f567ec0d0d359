"""The names runs carry in tables, the teacher store and reports: an arm's label, an alpha
schedule's, a network architecture's and a teacher's."""

from __future__ import annotations

from dfkd_cli import networks, sklearn_teacher
from dfkd_cli.strategies import STRATEGIES


def alpha_label(cfg) -> str:
    return f"constant{cfg.value:g}" if cfg.schedule == "constant" else cfg.schedule


def arm_label(cfg) -> str:
    """The arm's name in tables: `label` when set (the arm presets set it), else
    <strategy>_<alpha>_m<batch size>."""
    strategy = STRATEGIES[cfg.strategy.name].label(cfg.strategy)
    return cfg.label or f"{strategy}_{alpha_label(cfg.alpha)}_m{cfg.batch_size}"


def config_arch_name(net_cfg) -> str:
    """The name of the architecture a `teacher` / `student` config names (the store's key)."""
    return networks.arch_name(networks.describe(net_cfg, 0, 0))


def arch_label(tcfg) -> str:
    """The teacher's architecture in the store and the tables: a dfkd network's name
    ('mlp500-tanh', 'rbf-units50', networks.arch_name), a scikit-learn estimator's name ('svr'),
    or the format of a file the user names."""
    if tcfg.format == "sklearn":
        return sklearn_teacher.estimator_name(tcfg)
    if tcfg.format == "dfkd":
        return config_arch_name(tcfg)
    return tcfg.format
