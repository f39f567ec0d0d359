"""The part shared by the strategies that train a network of their own (`generator`,
`impressions`): its schema keys, a tanh MLP per population member, its RMSprop optimiser, the
autograd step that moves that network only, and its state in a resumable checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List

import torch
from omegaconf import II
from torch import nn

from dfkd_cli.nets import mlp
from dfkd_cli.strategies.base import Strategy, StrategyConfig


@dataclass
class NetworkConfig(StrategyConfig):
    latent_dim: int = 50  # z in R^50
    hidden: List[int] = field(default_factory=lambda: [500])  # tanh layers of the network
    steps: int = 1  # the network's optimiser steps (per epoch, or before the student)
    batch_size: int = II("batch_size")  # draws per network step; default: the student's m
    lr: float = 1e-3  # the network's RMSprop step size
    weight_decay: float = 1e-5  # the network's RMSprop weight decay
    rho: float = 0.99  # RMSprop smoothing constant (torch's `alpha`)


class NetworkStrategy(Strategy):
    """A strategy that fits a network of its own (`self.net`, built by `build_network`) with
    RMSprop on a loss of the teacher (and the student)."""

    Config = NetworkConfig
    needs_gradients = True

    @classmethod
    def checks(cls, cfg: Any) -> Iterable[tuple[str, bool, str]]:
        return [("latent_dim", cfg.latent_dim >= 1, "an integer >= 1"),
                ("hidden", len(cfg.hidden) >= 1 and all(h >= 1 for h in cfg.hidden),
                 "a non-empty list of sizes >= 1"),
                ("steps", cfg.steps >= 0, "an integer >= 0"),
                ("batch_size", cfg.batch_size >= 1, "an integer >= 1"),
                ("lr", cfg.lr > 0, "a number > 0"),
                ("weight_decay", cfg.weight_decay >= 0, "a number >= 0"),
                ("rho", 0 <= cfg.rho < 1, "a number in [0, 1)")]

    def build_network(self, inputs: int, outputs: int, net: nn.Module | None = None) -> None:
        """The network (`net`, or inputs -> `hidden` tanh layers -> outputs), member k
        initialised from the run's stream k, and its optimiser."""
        cfg = self.cfg
        net = net or mlp.StackedMLP(len(self.rng), inputs, list(cfg.hidden), "tanh", outputs)
        self.net = net.to(self.rng.device).init_(self.rng)
        self.opt = torch.optim.RMSprop(self.net.parameters(), lr=cfg.lr, alpha=cfg.rho,
                                       weight_decay=cfg.weight_decay)
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
