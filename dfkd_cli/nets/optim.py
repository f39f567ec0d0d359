"""Optimisers by config name or `_target_`; the one RMSprop kernel (rmsprop is the paper's choice
for teacher, student and generator, and the update of the bounded strategy's x)."""

from __future__ import annotations

import inspect
from typing import Iterable

import torch
from omegaconf import OmegaConf

from dfkd_cli.errors import UserError, reason

NAMES = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
EPS = 1e-8  # torch.optim.RMSprop's default


# the operations of `rmsprop_` on one tensor, and on lists of tensors (multi-tensor kernels)
_ONE = (torch.add, torch.Tensor.mul_, torch.Tensor.addcmul_, torch.sqrt, torch.Tensor.add_,
        torch.Tensor.addcdiv_)
_MANY = (torch._foreach_add, torch._foreach_mul_, torch._foreach_addcmul_, torch._foreach_sqrt,
         torch._foreach_add_, torch._foreach_addcdiv_)


def rmsprop_(params, grads, squares, lr: float, alpha: float, eps: float = EPS,
             weight_decay: float = 0.0) -> None:
    """One plain RMSprop step in place (torch.optim.RMSprop without momentum, not centred), on
    one tensor or on lists of tensors: g += weight_decay * p; v = alpha v + (1 - alpha) g^2;
    p -= lr g / (sqrt(v) + eps). The same arithmetic in the same order as torch's, as six
    operations (multi-tensor ones for lists)."""
    add, mul_, addcmul_, sqrt, add_, addcdiv_ = _MANY if isinstance(params, list) else _ONE
    if weight_decay:
        grads = add(grads, params, alpha=weight_decay)
    mul_(squares, alpha)
    addcmul_(squares, grads, grads, value=1 - alpha)
    avg = sqrt(squares)
    add_(avg, eps)
    addcdiv_(params, grads, avg, value=-lr)


class RMSprop(torch.optim.RMSprop):
    """torch.optim.RMSprop whose plain form (no momentum, not centred, not maximising) runs as
    `rmsprop_`: the same numbers at a fraction of the per-step overhead that torch's
    per-parameter loop costs for the fast path's many tiny steps. Other settings run torch's
    own step."""

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None or any(g["momentum"] or g["centered"] or g["maximize"]
                                      for g in self.param_groups):
            return super().step(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            torch._foreach_add_([s["step"] for s in states], 1)
            rmsprop_(params, [p.grad for p in params], [s["square_avg"] for s in states],
                     group["lr"], group["alpha"], group["eps"], group["weight_decay"])
        return None


def optimizer_class(optimizer) -> type:
    """The torch.optim class the optimizer config `optimizer` names (`_target_`, else `name`)."""
    if optimizer._target_:
        from hydra.utils import get_class  # imports only what the user named
        try:
            cls = get_class(optimizer._target_)
        except Exception as exc:  # an import error in the user's name
            raise UserError(f"optimizer._target_={optimizer._target_} could not be imported: "
                            f"{reason(exc)}") from exc
    else:
        cls = NAMES.get(optimizer.name) or getattr(torch.optim, optimizer.name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        key = (f"optimizer._target_={optimizer._target_}" if optimizer._target_
               else f"optimizer.name={optimizer.name}")
        raise UserError(f"{key} is not a torch.optim.Optimizer class; valid names: "
                        f"{sorted(NAMES)}, a torch.optim class, or a dotted class (_target_)")
    return cls


def accepted(cls: type) -> set[str]:
    """The keyword arguments an optimiser class takes (Rprop and LBFGS take no weight_decay)."""
    return set(inspect.signature(cls).parameters)


def check_steps_alone(cls: type) -> None:
    """Refuse a class whose step needs a closure (LBFGS): the student loop steps once per batch
    on gradients it computed itself."""
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise UserError(f"optimizer {cls.__name__} is not valid here: its step needs a closure "
                        "that re-evaluates the loss, and dfkd takes one step per batch; use a "
                        "first-order torch.optim class (Adam, RMSprop, SGD, Rprop, ...)")


def make_optimizer(optimizer, params: Iterable[torch.nn.Parameter], fast: bool = False
                   ) -> torch.optim.Optimizer:
    """The configured optimiser over `params`: lr, weight_decay, momentum (for the classes that
    take it) and `kwargs`. `fast` (the StackedMLP path) runs plain RMSprop through `rmsprop_`."""
    cls = optimizer_class(optimizer)
    extra = optimizer.get("kwargs") or {}
    extra = OmegaConf.to_container(extra) if OmegaConf.is_config(extra) else dict(extra)
    kwargs = {"lr": optimizer.lr, **{k: v for k, v in (("weight_decay", optimizer.weight_decay),)
                                     if k in accepted(cls)}, **extra}
    if cls in (torch.optim.RMSprop, torch.optim.SGD):
        kwargs.setdefault("momentum", optimizer.momentum)
    if fast and cls is torch.optim.RMSprop:
        cls = RMSprop
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"optimizer {cls.__name__} does not take {kwargs}: "
                        f"{reason(exc)}") from exc
