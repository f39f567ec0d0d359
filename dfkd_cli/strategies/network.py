"""The part shared by the strategies that train a network of their own (`generator`,
`impressions`): its schema keys, a tanh MLP per population member, its RMSprop optimiser, the
autograd step that moves that network only, and its state in a resumable checkpoint."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from dfkd_cli.nets import mlp
from dfkd_cli.strategies.base import Strategy
from dfkd_cli.strategies.schemas import NetworkConfig


class NetworkStrategy(Strategy):
    """A strategy that fits a network of its own (`self.net`, built by `build_network`) with
    RMSprop on a loss of the teacher (and the student)."""

    Config = NetworkConfig
    needs_gradients = True

    def build_network(self, inputs: int, outputs: int, net: nn.Module | None = None) -> None:
        """The network (`net`, or inputs -> `hidden` tanh layers -> outputs), member k
        initialised from the run's stream k, and its optimiser."""
        config = self.config
        net = net or mlp.StackedMLP(len(self.rng), inputs, list(config.hidden), "tanh", outputs)
        self.net = net.to(self.rng.device).init_(self.rng)
        self.opt = torch.optim.RMSprop(self.net.parameters(), lr=config.lr, alpha=config.rho,
                                       weight_decay=config.weight_decay)
        self.params = list(self.net.parameters())

    def fit(self, steps: int, objective: Callable[[], dict[str, torch.Tensor]]
            ) -> dict[str, torch.Tensor] | None:
        """`steps` optimiser steps on objective()["loss"] (K,), summed over members; gradients
        for the network only (the student's .grad is left alone). The last step's terms, or
        None after no step."""
        terms = None
        for _ in range(steps):
            terms = objective()
            grads = torch.autograd.grad(terms["loss"].sum(), self.params)
            for p, g in zip(self.params, grads):
                p.grad = g
            self.opt.step()
        return terms

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.net.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["generator"])
        self.opt.load_state_dict(state["optimizer"])
