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

import torch

from dfkd_cli.nets.conv_generator import StackedConvGenerator
from dfkd_cli.strategies.base import Net
from dfkd_cli.strategies.network import NetworkStrategy
from dfkd_cli.strategies.schemas import GeneratorConfig


class Generator(NetworkStrategy):
    """G: z -> x, the network of NetworkStrategy."""

    Config = GeneratorConfig

    def __init__(self, config, input_dim, box, rng, image=None):
        super().__init__(config, input_dim, box, rng, image=image)
        conv = (StackedConvGenerator(len(rng), config.latent_dim, list(image.shape),
                                     list(config.channels)) if config.arch == "conv" else None)
        self.build_network(self.config.latent_dim, input_dim, conv)
        self.beta, self.gamma = float(config.beta), float(config.gamma)
        self.steps, self.batch_size = int(config.steps), int(config.batch_size)
        self.latent_dim = int(config.latent_dim)

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
