"""`generator`: the adversarial generator of Kang & Kang (2021, ESWA 175:114813), the baseline
Zhou & Chiam (2023) compare their proposal with.

A generator G: z in R^50 -> 500 tanh -> d (linear output), one per population member, is trained
against the student. Once per epoch (before the student's n_s steps) it takes n_g RMSprop steps
(lr 1e-3, weight decay 1e-5) on a fresh batch z ~ N(0, I) of size m, minimising

    L_G = mean( -(T(G(z)) - S(G(z)))^2 + beta * ||G(z)||^2 + gamma * S(G(z))^2 ),

beta = gamma = 1e-5: G seeks inputs where teacher and student disagree, while the two small
penalties keep its samples and the student's outputs from running off. (Kang & Kang's released
code loses the beta and gamma terms to a stray line break; here they act, and a test shows it.)
The student then draws x_g = G(z) with fresh z for each of its steps; only G's weights move in
the generator step, only the student's in the student step.

`arch=conv` puts a convolutional decoder (nets/conv_generator.py, widths `channels`) in place of
the MLP for image-shaped inputs (dataset.input_shape = (C, H, W)): its samples are images built
from local patterns, in the standardised pixel space as the MLP's are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, List

import torch

from dfkd_cli.nets.conv_generator import StackedConvGenerator
from dfkd_cli.strategies.base import Net
from dfkd_cli.strategies.network import NetworkConfig, NetworkStrategy
from dfkd_cli.strategies.registry import register


ARCHS = ("mlp", "conv")


@dataclass
class GeneratorConfig(NetworkConfig):
    name: str = "generator"
    steps: int = 1  # n_g generator steps per epoch
    beta: float = 1e-5  # weight of ||G(z)||^2
    gamma: float = 1e-5  # weight of S(G(z))^2
    arch: str = "mlp"  # mlp (Kang & Kang's, `hidden`) | conv (image-shaped inputs, `channels`)
    channels: List[int] = field(default_factory=lambda: [32, 16])  # conv only: map widths


@register("generator")
class Generator(NetworkStrategy):
    """G: z -> x, the network of NetworkStrategy."""

    Config = GeneratorConfig

    @classmethod
    def checks(cls, cfg: Any) -> Iterable[tuple[str, bool, str]]:
        return [*super().checks(cfg), ("beta", cfg.beta >= 0, "a number >= 0"),
                ("gamma", cfg.gamma >= 0, "a number >= 0"),
                ("arch", cfg.arch in ARCHS, f"one of {ARCHS}"),
                ("channels", len(cfg.channels) >= 1 and all(c >= 1 for c in cfg.channels),
                 "a non-empty list of sizes >= 1")]

    @classmethod
    def needs_image(cls, cfg: Any) -> str | None:
        return "arch=conv" if cfg.arch == "conv" else None

    def __init__(self, cfg, input_dim, box, rng, image=None):
        super().__init__(cfg, input_dim, box, rng, image=image)
        conv = (StackedConvGenerator(len(rng), cfg.latent_dim, list(image.shape),
                                     list(cfg.channels)) if cfg.arch == "conv" else None)
        self.build_network(self.cfg.latent_dim, input_dim, conv)
        self.beta, self.gamma = float(cfg.beta), float(cfg.gamma)
        self.steps, self.batch_size = int(cfg.steps), int(cfg.batch_size)
        self.latent_dim = int(cfg.latent_dim)

    def objective(self, teacher: Net, student: Net, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_G and its terms on x = G(z), per member ((K,) tensors, differentiable in G)."""
        x = self.net(z)
        s = student(x)
        gap = (teacher(x) - s).pow(2).sum(2).mean(1)
        norm = x.pow(2).sum(2).mean(1)
        output = s.pow(2).sum(2).mean(1)
        return {"loss": -gap + self.beta * norm + self.gamma * output, "gap": gap,
                "norm": norm, "output": output}

    def update(self, teacher: Net, student: Net) -> dict[str, torch.Tensor]:
        terms = self.fit(self.steps, lambda: self.objective(
            teacher, student, self.rng.randn(self.batch_size, self.latent_dim)))
        if terms is None:
            return {}
        return {"gen_loss": terms["loss"].detach(), "gen_gap": terms["gap"].detach()}

    @torch.no_grad()
    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        return self.net(self.rng.randn(n, self.latent_dim))
