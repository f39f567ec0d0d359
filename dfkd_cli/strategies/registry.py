"""Config name -> strategy class (torchdistill-style registry)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from dfkd_cli.errors import UserError

STRATEGIES: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = cls
        return cls
    return add


def build_strategy(cfg: Any, teacher: Any, rng: Any, rows: Any = None, prior: Any = None,
                   project: Any = None, image: Any = None) -> Any:
    """The strategy `cfg` names, for a `teacher.Teacher`, drawing from `prior` (a callable
    n -> (K, n, d); None: N(0, I)), with the input domain's projection `project` (None: none),
    the split's training rows (x and y stacked over members) for a strategy that draws
    them, and the rows as images (data/images.py ImageView; None: not image-shaped) for a
    setting that needs them; the gradient-based strategies refuse a teacher that cannot be
    differentiated (ONNX, or teacher.differentiable=false)."""
    cls = STRATEGIES[cfg.name]
    if cls.needs_gradients and not teacher.differentiable:
        usable = sorted(name for name, c in STRATEGIES.items() if not c.needs_gradients)
        raise UserError(f"strategy={cfg.name} needs the teacher's gradients, and teacher "
                        f"{teacher.sources[0]} cannot be differentiated (an ONNX file, or "
                        f"teacher.differentiable=false); strategies that need only its outputs: "
                        f"{', '.join(usable)}")
    extra = {"rows": rows} if cls.needs_rows else {}
    setting = cls.needs_image(cfg)
    if setting and image is None:
        raise UserError(f"strategy.{setting} needs image-shaped inputs, and this run's rows are "
                        "not: give their shape as dataset.input_shape=[channels, height, width] "
                        "(or a teacher whose checkpoint records one)")
    if setting:
        extra["image"] = image
    strategy = cls(cfg, teacher.input_dim, teacher.box, rng, **extra)
    strategy.sampler = prior
    strategy.project = project
    if teacher.scalers:
        strategy.y_scale = tuple(torch.stack([getattr(s, k) for s in teacher.scalers]
                                             ).to(rng.device) for k in ("y_mean", "y_std"))
    return strategy
