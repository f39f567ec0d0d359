"""Synthetic-data strategies, one module each; importing this package registers them all."""

from dfkd_cli.strategies import bounded, random  # noqa: F401  (registration side effect)
from dfkd_cli.strategies.base import Strategy, batch_diagnostics
from dfkd_cli.strategies.registry import STRATEGIES, register

__all__ = ["STRATEGIES", "Strategy", "batch_diagnostics", "register"]
