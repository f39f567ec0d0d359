"""Optimisers by config name (rmsprop is the paper's choice for teacher, student and generator)."""

from __future__ import annotations

from typing import Iterable

import torch


class RMSprop(torch.optim.RMSprop):
    """torch.optim.RMSprop whose plain form (no momentum, not centred, not maximising) runs as
    six multi-tensor operations over all parameters: the same arithmetic in the same order, so
    the same numbers, at a fraction of the per-step overhead that torch's per-parameter loop
    costs for dfkd's many tiny steps. Other settings run torch's own step."""

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
            squares = [s["square_avg"] for s in states]
            torch._foreach_add_([s["step"] for s in states], 1)
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            torch._foreach_mul_(squares, group["alpha"])
            torch._foreach_addcmul_(squares, grads, grads, value=1 - group["alpha"])
            avg = torch._foreach_sqrt(squares)
            torch._foreach_add_(avg, group["eps"])
            torch._foreach_addcdiv_(params, grads, avg, value=-group["lr"])
        return None


def make_optimizer(cfg, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.name == "rmsprop":
        return RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                           momentum=cfg.momentum)
