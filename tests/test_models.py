"""StackedMLP's hand-written backward pass against autograd, for every activation; the fast
RMSprop against torch's."""

from __future__ import annotations

import pytest
import torch

from dfkd_cli.nets.activations import ACTIVATIONS, tanh
from dfkd_cli.nets.mlp import StackedMLP, baddbmm, bmm, sigmoid_form
from dfkd_cli.nets.optim import RMSprop
from dfkd_cli.utils.rng import Streams


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


@pytest.mark.parametrize("hidden,outputs", [([500], 1), ([30, 20], 2)])
def test_sigmoid_form_is_the_same_function_with_the_same_input_gradient(hidden, outputs):
    """A loaded tanh teacher runs as sigmoids (models.sigmoid_form): outputs and the input
    gradients that bounded follows must not move beyond float32 rounding."""
    net = StackedMLP(3, 12, hidden, "tanh", output_dim=outputs).init_(
        Streams([1, 2, 3], torch.device("cpu")))
    fast = sigmoid_form(net)
    assert fast.activation == "sigmoid"
    x = 3 * torch.randn(3, 200, 12, generator=torch.Generator().manual_seed(0))
    grad_out = torch.randn(3, 200, outputs, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), atol=5e-6, rtol=0)
        torch.testing.assert_close(fast.input_grad(fast.trace(x), grad_out),
                                   net.input_grad(net.trace(x), grad_out), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="tanh"):
        sigmoid_form(StackedMLP(1, 2, [3], "relu"))


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_rmsprop_matches_torch_bit_for_bit(weight_decay):
    """optim.RMSprop's multi-tensor step is torch.optim.RMSprop's arithmetic, not an approximation."""
    torch.manual_seed(0)
    ours = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    opt_ours = RMSprop(ours, lr=1e-2, weight_decay=weight_decay)
    opt_theirs = torch.optim.RMSprop(theirs, lr=1e-2, weight_decay=weight_decay, foreach=False)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in ours]
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    state = opt_ours.state_dict()["state"][0]
    assert float(state["step"]) == 5 and torch.equal(
        state["square_avg"], opt_theirs.state_dict()["state"][0]["square_avg"])


def test_batched_matrix_vector_detour_is_the_same_product():
    """models.bmm / baddbmm take a faster route for one output column with several members."""
    g = torch.Generator().manual_seed(0)
    a, b, bias = (torch.randn(*s, generator=g) for s in ((4, 30, 20), (4, 20, 1), (4, 1, 1)))
    torch.testing.assert_close(bmm(a, b), torch.bmm(a, b))
    torch.testing.assert_close(baddbmm(bias, a, b), torch.baddbmm(bias, a, b))
    wide = torch.randn(4, 20, 3, generator=g)
    torch.testing.assert_close(bmm(a, wide), torch.bmm(a, wide))
