"""A convolutional generator z -> image for a population: `strategy.arch=conv` of Kang & Kang's
generator on image-shaped inputs (a DCGAN-style decoder, without batch normalisation, so each
member's samples do not depend on the rest of its batch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dfkd_cli.nets.mlp import baddbmm
from dfkd_cli.utils.rng import Streams


class StackedConvGenerator(nn.Module):
    """K independent generators (K, n, latent) -> (K, n, C * H * W) in one program.

    With channels c_1..c_L: a linear map of z to c_1 maps of ceil(H / 2^L) x ceil(W / 2^L),
    tanh, then L times: nearest upsampling (twice as large, the last exactly H x W), a 3 x 3
    convolution to the next width (C after the last) and tanh but after the last. The members'
    convolutions run as one grouped convolution; member k is initialised from its own stream
    like torch's layers (U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""

    def __init__(self, members: int, latent_dim: int, shape: list[int], channels: list[int]):
        super().__init__()
        self.members, self.shape = members, [int(s) for s in shape]
        c, height, width = self.shape
        depth = len(channels)
        # the maps' sizes, from ceil(H / 2^L) up to H
        self.sizes = [(math.ceil(height / 2 ** (depth - i)), math.ceil(width / 2 ** (depth - i)))
                      for i in range(depth + 1)]
        first = channels[0] * self.sizes[0][0] * self.sizes[0][1]
        self.linear_w = nn.Parameter(torch.empty(members, latent_dim, first))
        self.linear_b = nn.Parameter(torch.empty(members, 1, first))
        widths = [*channels, c]
        self.conv_w = nn.ParameterList(nn.Parameter(torch.empty(members * b, a, 3, 3))
                                       for a, b in zip(widths, widths[1:]))
        self.conv_b = nn.ParameterList(nn.Parameter(torch.empty(members * b))
                                       for b in widths[1:])
        self.channels = channels

    @torch.no_grad()
    def init_(self, rng: Streams) -> "StackedConvGenerator":
        for w, b in [(self.linear_w, self.linear_b), *zip(self.conv_w, self.conv_b)]:
            bound = (math.prod(w.shape[1:]) if w.dim() == 4 else w.shape[1]) ** -0.5  # fan-in
            for p in (w, b):  # stacked (K, ...) or grouped (K * out, ...): one member's shape
                one = p.shape[1:] if p.dim() == 3 else (p.shape[0] // self.members, *p.shape[1:])
                p.copy_((rng.rand(*one).reshape(p.shape) * 2 - 1) * bound)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k, n = z.shape[:2]
        h = torch.tanh(baddbmm(self.linear_b, z, self.linear_w))  # (K, n, c_1 * h_0 * w_0)
        h = h.transpose(0, 1).reshape(n, k * self.channels[0], *self.sizes[0])
        last = len(self.conv_w) - 1
        for i, (w, b) in enumerate(zip(self.conv_w, self.conv_b)):
            h = F.interpolate(h, size=self.sizes[i + 1], mode="nearest")
            h = F.conv2d(h, w, b, padding=1, groups=k)
            if i < last:
                h = torch.tanh(h)
        return h.reshape(n, k, -1).transpose(0, 1)  # (K, n, C * H * W), member-major
