"""Random streams for a population: one torch.Generator per member, seeded with its seed.

Member k draws exactly the numbers a single run with seed k draws, so a population of K runs in
one batched program gives the results of the K separate runs.
"""

from __future__ import annotations

from functools import partial

import torch

from dfkd_cli.errors import UserError


def member_seeds(seed: int, seeds: list[int] | None) -> list[int]:
    """A run's population: `seeds` when given (seeds=[...]), else the single `seed`."""
    seeds = [int(s) for s in seeds] if seeds else [int(seed)]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds={seeds} repeats a seed; each member needs its own")
    return seeds


class Streams:
    def __init__(self, seeds: list[int], device: torch.device):
        self.device = device
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def _draw(self, fill, shape: tuple[int, ...]) -> torch.Tensor:
        if len(self.generators) == 1:
            return fill((1, *shape), generator=self.generators[0], device=self.device)
        return torch.stack([fill(shape, generator=g, device=self.device)
                            for g in self.generators])

    def randn(self, *shape: int) -> torch.Tensor:
        """(K, *shape) standard normal draws, member k from its own stream."""
        return self._draw(torch.randn, shape)

    def rand(self, *shape: int) -> torch.Tensor:
        """(K, *shape) uniform [0, 1) draws, member k from its own stream."""
        return self._draw(torch.rand, shape)

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        """(K, *shape) integers uniform in [0, high), member k from its own stream."""
        return self._draw(partial(torch.randint, high), shape)

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)
