"""A population: K members of one architecture run together, and what the student loop, the
strategies and train-teacher ask of it.

`pop(x)` maps (K, n, d) inputs to (K, n, k) outputs, member k on x[k]; `pop.params` are its
parameters, each (K, ...) with member k's values at index k (so snapshots, finiteness checks and
optimiser state are per member along the first axis); `trace(x)` runs the forward pass keeping
what a backward pass needs, and `input_grad(saved, g)` / `param_grads(saved, g)` give dL/dx and
dL/dparams for dL/d(output) = g; `member_state_dict(k)` is member k as the state dict of one
network. Two implementations:

- `mlp.StackedMLP`, the fast path: an MLP as batched matrix products with a hand-written
  backward pass, picked automatically for an MLP (`fast_path=auto`);
- `ModulePopulation` (here), the default for any differentiable `torch.nn.Module` (and for an MLP
  with `fast_path=off`): K copies of the module whose parameters are views into the stacked
  (K, ...) parameters, run one after the other, gradients by autograd. Member k computes exactly
  what a single run of member k computes (torch.func.vmap would batch them, but not bit for bit;
  see docs/performance.md). A built-in network may also give `population_forward(params, x)`,
  its forward pass for all members at once from the stacked parameters, written so that member
  k's numbers do not depend on the population (the rbf); without gradients (a gradient-free
  strategy's many evaluations, predictions) and under fast_path=auto, the population uses it.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from dfkd_cli.nets import mlp


class Net(Protocol):
    """What a strategy asks of a teacher or a student population: the forward pass
    (K, n, d) -> (K, n, k) and, for the strategies that follow dL/dx, the backward pass to the
    inputs (a teacher that cannot be differentiated has no `trace`: build_strategy refuses it
    to those strategies)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]: ...

    def input_grad(self, saved: list[torch.Tensor], grad_out: torch.Tensor) -> torch.Tensor: ...


class AutogradBackward:
    """`trace` / `input_grad` / `param_grads` through autograd, for a population whose forward
    pass is differentiable (a module of any kind, a TorchScript teacher). `param_grads` is for
    a class that sets `self.params`, the tensors to differentiate (a teacher has none)."""

    params: list[torch.Tensor]

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return [x, self(x)]

    def input_grad(self, saved: list[torch.Tensor], grad_out: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(saved[-1], saved[0], grad_out)[0]

    def param_grads(self, saved: list[torch.Tensor], grad_out: torch.Tensor
                    ) -> list[torch.Tensor]:
        return list(torch.autograd.grad(saved[-1], self.params, grad_out))


ALIGN = 16  # floats: 64 bytes, the widest vector a CPU kernel loads


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """t itself when it starts on a 64-byte boundary, else a fresh (aligned) copy: a matrix
    product's rounding can depend on where its operands start, and a member's numbers must not
    depend on where its slice of the population lies."""
    return t if t.data_ptr() % (4 * ALIGN) == 0 else t.clone()


def _aligned_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack(tensors), each member's slice starting on a 64-byte boundary (a gap after
    each member when its size is not a multiple of 16 floats)."""
    first = tensors[0]
    step = -(-first.numel() // ALIGN) * ALIGN
    flat = torch.zeros(len(tensors) * step, dtype=first.dtype, device=first.device)
    out = flat.as_strided((len(tensors), *first.shape), (step, *first.contiguous().stride()))
    for k, t in enumerate(tensors):
        out[k].copy_(t)
    return out


class _Stack(torch.autograd.Function):
    """torch.stack over the members' outputs whose backward hands each member an aligned copy of
    its slice of the gradient (torch.stack's would be views at any offset)."""

    @staticmethod
    def forward(ctx, *outputs):
        return torch.stack(outputs)

    @staticmethod
    def backward(ctx, grad):
        return tuple(g.clone() for g in grad.unbind(0))


class ModulePopulation(AutogradBackward, nn.Module):
    """K networks of one architecture as a population (see the module docstring).

    `params` are the stacked (K, ...) parameters (this module's own, for snapshots, checks and
    checkpoints); each member network holds views of its slices as its own parameters, and the
    optimiser steps those views (`opt_params`, member by member; `owners[i]` is the member of
    `opt_params[i]`), so every member's update is the same computation as in a single run."""

    def __init__(self, members: list[nn.Module], batched: bool = True):
        super().__init__()
        # a built-in network may offer `population_forward(params, x)`, all members in one
        # batched program; used without gradients (batched=False: the member loop throughout)
        self.batched_forward: Callable | None = (
            getattr(type(members[0]), "population_forward", None) if batched else None)
        self.names = [name for name, _ in members[0].named_parameters()]
        self.buffer_names = [name for name, _ in members[0].named_buffers()]
        self.stacked = nn.ParameterList(
            nn.Parameter(_aligned_stack([m.get_parameter(n).detach() for m in members]))
            for n in self.names)
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}",
                                 _aligned_stack([m.get_buffer(name) for m in members]))
        self.nets = list(members)  # a plain list: their parameters are views, not our own
        self.params = list(self.stacked)
        self._bind()

    @property
    def members(self) -> int:
        return len(self.nets)

    def _bind(self) -> None:
        """Point every member's parameters and buffers at its slice of the stacked tensors."""
        buffers = [getattr(self, f"buffer{i}") for i in range(len(self.buffer_names))]
        self.opt_params, self.owners = [], []
        for k, net in enumerate(self.nets):
            for name, stacked in zip(self.names, self.params):
                owner, _, leaf = name.rpartition(".")
                view = nn.Parameter(stacked.data[k], requires_grad=stacked.requires_grad)
                setattr(net.get_submodule(owner), leaf, view)
                self.opt_params.append(view)
                self.owners.append(k)
            for name, stacked in zip(self.buffer_names, buffers):
                owner, _, leaf = name.rpartition(".")
                net.get_submodule(owner)._buffers[leaf] = stacked[k]

    def _apply(self, fn, recurse=True):  # .to(device), .double(): rebind the members' views
        out = super()._apply(fn, recurse)
        self._bind()
        return out

    def requires_grad_(self, requires_grad: bool = True) -> "ModulePopulation":
        for p in [*self.params, *self.opt_params]:
            p.requires_grad_(requires_grad)
        return self

    def train(self, mode: bool = True) -> "ModulePopulation":
        super().train(mode)
        for net in self.nets:
            net.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batched_forward is not None and not torch.is_grad_enabled():
            return self.batched_forward(dict(zip(self.names, self.params)), x)
        if len(self.nets) == 1:  # x[0] and the gradient of the output start where x and it do
            return mlp.columns(self.nets[0](_aligned(x[0]))).unsqueeze(0)
        outputs = [mlp.columns(net(_aligned(x[k]))) for k, net in enumerate(self.nets)]
        # without gradients (a gradient-free strategy's many forward passes) a plain stack
        return _Stack.apply(*outputs) if torch.is_grad_enabled() else torch.stack(outputs)

    def param_grads(self, saved: list[torch.Tensor], grad_out: torch.Tensor
                    ) -> list[torch.Tensor]:
        """dL/d(opt_params), member by member."""
        grads = torch.autograd.grad(saved[-1], self.opt_params, grad_out, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.opt_params, grads)]

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.nets[k].state_dict().items()}
