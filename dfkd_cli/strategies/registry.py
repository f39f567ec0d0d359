"""strategy=<name> -> the strategy class that runs it, and the one function that builds it.
Each class names its schema (`Config`, strategies/schemas.py), whose `name` is its key."""

from __future__ import annotations

from typing import Any

import torch

from dfkd_cli.errors import UserError
from dfkd_cli.strategies.bounded import Bounded
from dfkd_cli.strategies.evolution import Evolution
from dfkd_cli.strategies.generator import Generator
from dfkd_cli.strategies.impressions import Impressions
from dfkd_cli.strategies.lhs import LatinHypercube
from dfkd_cli.strategies.random import RandomSampling
from dfkd_cli.strategies.real_rows import RealRows
from dfkd_cli.strategies.sobol import SobolSampling
from dfkd_cli.strategies.uniform import UniformSampling

STRATEGIES: dict[str, type] = {cls.Config.name: cls for cls in (
    Bounded, Evolution, Generator, Impressions, LatinHypercube, RandomSampling, RealRows,
    SobolSampling, UniformSampling)}


def build_strategy(config: Any, teacher: Any, rng: Any, rows: Any = None, prior: Any = None,
                   project: Any = None, image: Any = None) -> Any:
    """The strategy `config` names, for a `teacher.Teacher`, drawing from `prior` (a callable
    n -> (K, n, d); None: N(0, I)), with the input domain's projection `project` (None: none),
    the split's training rows (x and y stacked over members) for a strategy that draws
    them, and the rows as images (data/images.py ImageView; None: not image-shaped) for a
    setting that needs them; the gradient-based strategies refuse a teacher that cannot be
    differentiated (ONNX, or teacher.differentiable=false)."""
    cls = STRATEGIES[config.name]
    if cls.needs_gradients and not teacher.differentiable:
        usable = sorted(name for name, c in STRATEGIES.items() if not c.needs_gradients)
        raise UserError(f"strategy={config.name} needs the teacher's gradients, and teacher "
                        f"{teacher.sources[0]} cannot be differentiated (an ONNX file, or "
                        f"teacher.differentiable=false); strategies that need only its outputs: "
                        f"{', '.join(usable)}")
    extra = {"rows": rows} if cls.Config.needs_rows else {}
    setting = cls.Config.needs_image(config)
    if setting and image is None:
        raise UserError(f"strategy.{setting} needs image-shaped inputs, and this run's rows are "
                        "not: give their shape as dataset.input_shape=[channels, height, width] "
                        "(or a teacher whose checkpoint records one)")
    if setting:
        extra["image"] = image
    strategy = cls(config, teacher.input_dim, teacher.box, rng, **extra)
    strategy.sampler = prior
    strategy.project = project
    if teacher.scalers:
        strategy.y_scale = tuple(torch.stack([getattr(s, k) for s in teacher.scalers]
                                             ).to(rng.device) for k in ("y_mean", "y_std"))
    return strategy
