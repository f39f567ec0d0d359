"""Synthetic-data strategies, one module each; importing this package registers them all."""

from dfkd_cli.strategies import (  # noqa: F401  (registration side effect)
    bounded,
    evolution,
    generator,
    impressions,
    lhs,
    random,
    real_rows,
    sobol,
    uniform,
)
from dfkd_cli.strategies.base import Strategy, batch_diagnostics, per_sample
from dfkd_cli.strategies.registry import STRATEGIES, build_strategy, register

__all__ = ["STRATEGIES", "Strategy", "batch_diagnostics", "build_strategy", "per_sample",
           "register"]
