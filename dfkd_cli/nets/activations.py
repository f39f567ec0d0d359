"""Activation functions with their derivatives, for autograd and for hand-written backward passes.

`tanh` is computed as 2 * sigmoid(2z) - 1: the same function (absolute difference ~1e-7 in
float32), and faster than torch.tanh on CPUs (docs/performance.md). Each activation's backward
maps dL/da to dL/dz from the layer's input z and output a, so StackedMLP can back-propagate
without building an autograd graph; tanh's and sigmoid's are aten's fused kernels (one pass
instead of two).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

Fn = Callable[[torch.Tensor], torch.Tensor]
Backward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (dL/da, z, a) -> dL/dz


# 0-dim tensors, not Python numbers: an op with a Python number wraps it in a tensor first, which
# costs about as much as the op itself on these small arrays
_TWO, _MINUS_ONE = torch.tensor(2.0), torch.tensor(-1.0)


def tanh(z: torch.Tensor) -> torch.Tensor:
    return torch.add(_MINUS_ONE, torch.sigmoid(torch.mul(z, _TWO)), alpha=2)


_tanh_backward = torch.ops.aten.tanh_backward.default  # g * (1 - a^2)
_sigmoid_backward = torch.ops.aten.sigmoid_backward.default  # g * a * (1 - a)


def _gelu_backward(g: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return g * (cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))


def _silu_backward(g: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return g * s * (1 + z * (1 - s))


class Spec(NamedTuple):
    fn: Fn
    backward: Backward
    module: type[nn.Module]  # torch's own module of the same function (what exports use)


ACTIVATIONS: dict[str, Spec] = {
    "tanh": Spec(tanh, lambda g, z, a: _tanh_backward(g, a), nn.Tanh),
    "relu": Spec(torch.relu, lambda g, z, a: g * (z > 0).to(z.dtype), nn.ReLU),
    "gelu": Spec(F.gelu, _gelu_backward, nn.GELU),
    "sigmoid": Spec(torch.sigmoid, lambda g, z, a: _sigmoid_backward(g, a), nn.Sigmoid),
    "silu": Spec(F.silu, _silu_backward, nn.SiLU),
}


class Activation(nn.Module):
    """An activation of the table above as a module (for nn.Sequential MLPs)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name].fn

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)

    def extra_repr(self) -> str:
        return self.name
