"""dfkd's built-in networks besides the MLP: plain `nn.Module`s of (n, d) -> (n, k) that run on
the autograd path (dfkd_cli/nets/population.py), like any network a user names by `_target_`.

Every constructor takes `input_dim` and `output_dim` (filled in from the dataset and the teacher)
and keyword arguments of its own (`student.net.<key>=...`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dfkd_cli.errors import UserError


def rbf(x: torch.Tensor, centres: torch.Tensor, log_width: torch.Tensor,
        weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """An RBF network's output W phi(x) + b, phi_j(x) = exp(-||x - c_j||^2 / (2 s_j^2)): of one
    network, x (n, d) and its parameters, or of a population, x (K, n, d) and the K networks'
    parameters stacked along a first axis (one batched product per layer)."""
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, clamped at 0 against rounding
    squared = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ centres.transpose(-1, -2)
               + centres.pow(2).sum(-1).unsqueeze(-2)).clamp_min(0)
    phi = torch.exp(-0.5 * squared * torch.exp(-2 * log_width).unsqueeze(-2))
    # the output layer as a product and a sum over the units, not a matrix product: a batched
    # product with few output columns rounds a member's rows differently in a population than
    # alone, a sum over each row's units does not
    return (phi.unsqueeze(-2) * weight.unsqueeze(-3)).sum(-1) + bias.unsqueeze(-2)


class RBF(nn.Module):
    """A Gaussian radial-basis network: `units` units phi_j(x) = exp(-||x - c_j||^2 / (2 s_j^2))
    with learned centres c_j and widths s_j (stored as log s_j), and a linear output layer: the
    student of Zhou & Chiam's (2023) protein case study. Centres start at N(0, I) draws (the
    prior of the standardised inputs), widths at sqrt(d) (the typical distance between two of
    them, over sqrt 2)."""

    def __init__(self, input_dim: int, output_dim: int, units: int = 50):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(units, input_dim))
        self.log_width = nn.Parameter(torch.full((units,), 0.5 * math.log(input_dim)))
        self.out = nn.Linear(units, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rbf(x, self.centres, self.log_width, self.out.weight, self.out.bias)

    @staticmethod
    def population_forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """K networks at once, (K, n, d) -> (K, n, k), from their stacked parameters."""
        return rbf(x, params["centres"], params["log_width"], params["out.weight"],
                   params["out.bias"])


class ResidualBlock(nn.Module):
    """h + W2 act(W1 LayerNorm(h)) (a pre-norm residual block)."""

    def __init__(self, width: int, expansion: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, width * expansion)
        self.act = nn.GELU()
        self.outer = nn.Linear(width * expansion, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.outer(self.act(self.inner(self.norm(h))))


class ResMLP(nn.Module):
    """An MLP of `blocks` pre-norm residual blocks of `width` units with LayerNorm: a Linear
    into the width, the blocks, a final LayerNorm and a linear output."""

    def __init__(self, input_dim: int, output_dim: int, width: int = 64, blocks: int = 2,
                 expansion: int = 2):
        super().__init__()
        self.inp = nn.Linear(input_dim, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, expansion) for _ in range(blocks)))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.blocks(self.inp(x))))


class CNN(nn.Module):
    """A small convolutional network for inputs of shape `input_shape`: (channels, length) for
    a 1-D signal, (channels, height, width) for an image; the rows dfkd passes are flat
    (n, prod(input_shape)) and are reshaped here. Without an input shape the features are one
    1-D signal (1, d). Each entry of `channels` is a 3-wide convolution + ReLU (stride 2 after
    the first), then a global average pool and a linear output."""

    def __init__(self, input_dim: int, output_dim: int, input_shape: list[int] | None = None,
                 channels: list[int] = (8, 16)):
        super().__init__()
        shape = list(input_shape) if input_shape else [1, input_dim]
        if math.prod(shape) != input_dim or len(shape) not in (2, 3):
            raise UserError(f"the cnn's input_shape {shape} does not fit {input_dim} features: "
                            "give (channels, length) or (channels, height, width) whose product "
                            "is the number of features (dataset.input_shape=[...])")
        self.shape = shape
        conv = nn.Conv1d if len(shape) == 2 else nn.Conv2d
        layers: list[nn.Module] = []
        width = shape[0]
        for i, c in enumerate(channels):
            layers += [conv(width, c, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
            width = c
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.reshape([x.shape[0]] + self.shape))
        return self.out(h.flatten(2).mean(2))
