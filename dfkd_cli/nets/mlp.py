"""The MLP family (single and stacked): the fast path of the network seam.

StackedMLP runs K members in one batched program and can back-propagate by hand (`trace`,
`input_grad`, `param_grads`): the student loop's steps are tiny, so skipping autograd's graph
building roughly halves their cost. tests/test_models.py checks the hand-written gradients
against autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from dfkd_cli.nets.activations import ACTIVATIONS, Activation
from dfkd_cli.utils.rng import Streams


def columns(y: torch.Tensor) -> torch.Tensor:
    """A network's output as (n, k), also when it returns a vector (n,)."""
    return y.unsqueeze(-1) if y.dim() == 1 else y


def mlp(input_dim: int, hidden: list[int], activation: str, output_dim: int = 1) -> nn.Sequential:
    """input_dim -> hidden[0] -> ... -> output_dim, `activation` after every hidden layer."""
    layers: list[nn.Module] = []
    width = input_dim
    for h in hidden:
        layers += [nn.Linear(width, h), Activation(activation)]
        width = h
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.bmm(a, b) for (K, n, m) @ (K, m, p), routed around a slow CPU kernel: with K > 1
    members and one output column (a batched matrix-vector product) torch.bmm is several times
    slower on CPU than the same product transposed, a row vector times a matrix
    (docs/performance.md)."""
    if b.shape[2] == 1 and a.shape[0] > 1 and a.device.type == "cpu":
        return torch.bmm(b.transpose(1, 2), a.transpose(1, 2)).transpose(1, 2)
    return torch.bmm(a, b)


def baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.baddbmm(bias, a, b), with `bmm`'s detour where it applies."""
    if b.shape[2] == 1 and a.shape[0] > 1 and a.device.type == "cpu":
        return bmm(a, b).add_(bias)
    return torch.baddbmm(bias, a, b)


class StackedMLP(nn.Module):
    """K independent MLPs of one architecture in one batched program: (K, n, d) -> (K, n, out).

    Layer i holds weights (K, in, out) and biases (K, 1, out) and runs as one baddbmm, so the
    cost of a step hardly grows with K. Member k is initialised from its own random stream like
    nn.Linear (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases).
    """

    def __init__(self, members: int, input_dim: int, hidden: list[int], activation: str,
                 output_dim: int = 1):
        super().__init__()
        widths = [input_dim, *hidden, output_dim]
        self.activation = activation
        spec = ACTIVATIONS[activation]
        self.act, self.act_backward = spec.fn, spec.backward
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(members, a, b)) for a, b in zip(widths, widths[1:]))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(members, 1, b)) for b in widths[1:])
        # (weight, bias) per layer as a plain list: iterating a ParameterList costs microseconds
        # per item, and the student loop runs the network about ten times per step
        self.layers = list(zip(self.weights, self.biases))
        self.params = [*self.weights, *self.biases]  # self.parameters() as a list, in order
        self.opt_params, self.owners = self.params, None  # the optimiser steps the stacks

    @property
    def members(self) -> int:
        return self.layers[0][0].shape[0]

    @torch.no_grad()
    def init_(self, rng: Streams) -> "StackedMLP":
        for w, b in self.layers:
            bound = w.shape[1] ** -0.5
            w.copy_(rng.rand(*w.shape[1:]) * 2 * bound - bound)
            b.copy_(rng.rand(*b.shape[1:]) * 2 * bound - bound)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            x = baddbmm(b, x, w)
            if i < last:
                x = self.act(x)
        return x

    # Hand-written back-propagation (call under torch.no_grad()).

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Forward pass keeping what the backward pass needs: [x, z1, a1, z2, a2, ..., out]."""
        saved = [x]
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            x = baddbmm(b, x, w)
            saved.append(x)
            if i < last:
                x = self.act(x)
                saved.append(x)
        return saved

    def _backward(self, saved: list[torch.Tensor], grad_out: torch.Tensor, want_params: bool,
                  want_input: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        weight_grads, bias_grads = [], []
        g = grad_out  # dL/dz of the current layer
        for i in range(len(self.layers) - 1, -1, -1):
            layer_input = saved[2 * i]  # x for layer 0, else the previous layer's output a
            if want_params:
                weight_grads.append(bmm(layer_input.transpose(1, 2), g))
                bias_grads.append(g.sum(dim=1, keepdim=True))
            if i == 0 and not want_input:
                break
            g = torch.bmm(g, self.layers[i][0].transpose(1, 2))
            if i > 0:
                g = self.act_backward(g, saved[2 * i - 1], layer_input)
        return weight_grads[::-1] + bias_grads[::-1], (g if want_input else None)

    def input_grad(self, saved: list[torch.Tensor], grad_out: torch.Tensor) -> torch.Tensor:
        """dL/dx from dL/d(output), for the trace `saved`."""
        return self._backward(saved, grad_out, want_params=False, want_input=True)[1]

    def param_grads(self, saved: list[torch.Tensor], grad_out: torch.Tensor
                    ) -> list[torch.Tensor]:
        """dL/dparameter for every parameter, in `self.parameters()` order."""
        return self._backward(saved, grad_out, want_params=True, want_input=False)[0]

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k as the state dict of the equivalent `mlp(...)` (nn.Sequential)."""
        state = {}
        for i, (w, b) in enumerate(self.layers):
            state[f"{2 * i}.weight"] = w[k].detach().t().contiguous()
            state[f"{2 * i}.bias"] = b[k, 0].detach().clone()
        return state

    @classmethod
    def from_state_dicts(cls, states: list[dict[str, torch.Tensor]], activation: str
                         ) -> "StackedMLP":
        """Stack K nn.Sequential MLP state dicts of one architecture into one StackedMLP."""
        layers = sorted({int(k.split(".")[0]) for k in states[0]})
        first = [states[0][f"{i}.weight"] for i in layers]  # (out, in) each
        widths = [first[0].shape[1]] + [w.shape[0] for w in first]
        model = cls(len(states), widths[0], widths[1:-1], activation, widths[-1])
        with torch.no_grad():
            for i, (w, b) in zip(layers, zip(model.weights, model.biases)):
                w.copy_(torch.stack([s[f"{i}.weight"].t() for s in states]))
                b.copy_(torch.stack([s[f"{i}.bias"] for s in states]).unsqueeze(1))
        return model


@torch.no_grad()
def sigmoid_form(model: StackedMLP) -> StackedMLP:
    """The same function as a tanh network `model`, computed with sigmoids, for weights that no
    longer change (a loaded teacher). tanh(z) = 2 sigmoid(2z) - 1, so a hidden layer's weights
    and bias are doubled, and the layer after it, fed s = (a + 1) / 2 instead of a, takes weights
    2W and bias b - sum_i W_i. One elementwise pass per hidden layer instead of three (the
    fast tanh's scale, sigmoid and shift; docs/performance.md).
    Computed in float64; outputs agree with `model` to float32 rounding."""
    if model.activation != "tanh":
        raise ValueError(f"sigmoid_form needs a tanh network, not {model.activation}")
    widths = [model.layers[0][0].shape[1]] + [w.shape[2] for w, _ in model.layers]
    out = StackedMLP(model.members, widths[0], widths[1:-1], "sigmoid", widths[-1])
    last = len(model.layers) - 1
    for i, ((w, b), (w_new, b_new)) in enumerate(zip(model.layers, out.layers)):
        w, b = w.double(), b.double()
        if i > 0:  # input s = (a + 1) / 2: a W + b = s (2 W) + (b - sum over inputs of W)
            w, b = 2 * w, b - w.sum(dim=1, keepdim=True)
        if i < last:  # tanh(z) = 2 sigmoid(2 z) - 1
            w, b = 2 * w, 2 * b
        w_new.copy_(w)
        b_new.copy_(b)
    return out.to(model.layers[0][0].device)


def per_member(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) flags shaped to broadcast against a (K, ...) tensor."""
    return flags.view(-1, *([1] * (like.dim() - 1)))


class Snapshot:
    """Per member, a copy of the student's weights taken when `take` says so; tensor ops only."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.kept = [p.detach().clone() for p in params]

    @torch.no_grad()
    def take(self, which: torch.Tensor) -> None:
        for kept, current in zip(self.kept, self.params):
            kept.copy_(torch.where(per_member(which, kept), current, kept))

    @torch.no_grad()
    def restore(self, which: torch.Tensor) -> None:
        for kept, current in zip(self.kept, self.params):
            current.copy_(torch.where(per_member(which, kept), kept, current))


def arch_name(hidden: list[int], activation: str) -> str:
    """A short name for an architecture, e.g. 'mlp500-tanh' (used as the teacher store key)."""
    return "mlp" + "x".join(str(h) for h in hidden) + f"-{activation}"
