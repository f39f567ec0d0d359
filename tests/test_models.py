"""StackedMLP's hand-written backward pass against autograd, for every activation."""

from __future__ import annotations

import pytest
import torch

from dfkd_cli.activations import ACTIVATIONS, tanh
from dfkd_cli.models import StackedMLP
from dfkd_cli.rng import Streams


def test_fast_tanh_is_tanh():
    z = torch.linspace(-20, 20, 100001)
    torch.testing.assert_close(tanh(z), torch.tanh(z), atol=3e-7, rtol=0)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_hand_written_gradients_match_autograd(activation):
    torch.manual_seed(0)
    net = StackedMLP(3, 4, [6, 5], activation, output_dim=2).init_(
        Streams([1, 2, 3], torch.device("cpu")))
    x = torch.randn(3, 7, 4, requires_grad=True)
    grad_out = torch.randn(3, 7, 2)
    out = net(x)
    expected = torch.autograd.grad(out, [x, *net.parameters()], grad_out)
    with torch.no_grad():
        saved = net.trace(x.detach())
        torch.testing.assert_close(saved[-1], out.detach())
        torch.testing.assert_close(net.input_grad(saved, grad_out), expected[0])
        for ours, theirs in zip(net.param_grads(saved, grad_out), expected[1:], strict=True):
            torch.testing.assert_close(ours, theirs)
