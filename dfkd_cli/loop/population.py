"""A run's population: its members' seeds and the directories they write into."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfkd_cli.utils.rng import member_seeds


@dataclass(frozen=True)
class Members:
    """Member k has seed seeds[k] and writes its tables and checkpoints into dirs[k]."""

    seeds: list[int]
    dirs: list[Path]

    def __len__(self) -> int:
        return len(self.seeds)


def members(seed: int, seeds: list[int] | None, run_dir: str | Path) -> Members:
    """A run's members: a population (`seeds`, from seeds=[...]), each member writing into
    <run_dir>/seed<N>/, or the single `seed`, writing into the run directory itself."""
    population = member_seeds(seed, seeds)
    run_dir = Path(run_dir)
    return Members(population, [run_dir / f"seed{s}" for s in population] if seeds
                   else [run_dir])
