"""Each strategy's config schema: its keys with their defaults (the paper's settings), the range
checks a type cannot express, its name in an arm's label and the setting that needs image rows.
Plain dataclasses, no run-time imports: config.py registers them with Hydra, and each strategy
module (strategies/<name>.py) runs what they describe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, List, Optional

from omegaconf import II, MISSING

from dfkd_cli.errors import UserError

Checks = Iterable[tuple[str, bool, str]]  # (key, ok, what is valid)


@dataclass
class StrategyConfig:
    """Common part of every strategy's schema; each strategy adds its hyper-parameters."""

    name: str = MISSING  # the strategy, set by strategy=<name>

    needs_rows: ClassVar[bool] = False  # draws the split's training rows: dataset=none refuses it

    @classmethod
    def checks(cls, config: Any) -> Checks:
        """(key, ok, what is valid) for range checks on this strategy's config."""
        return ()

    @classmethod
    def label(cls, config: Any) -> str:
        """The strategy's name in an arm's derived label (strategies/labels.py)."""
        return config.name

    @classmethod
    def needs_image(cls, config: Any) -> str | None:
        """The setting (e.g. "arch=conv") that makes this config see its rows as images
        (data/images.py), or None: build_strategy refuses it on other rows."""
        return None


@dataclass
class RandomConfig(StrategyConfig):
    name: str = "random"


@dataclass
class UniformConfig(StrategyConfig):
    name: str = "uniform"


@dataclass
class LHSConfig(StrategyConfig):
    name: str = "lhs"


@dataclass
class SobolConfig(StrategyConfig):
    name: str = "sobol"


@dataclass
class BoundedConfig(StrategyConfig):
    """The paper's proposal (strategies/bounded.py)."""

    name: str = "bounded"
    steps: int = 2  # RMSprop steps on each batch
    lr: float = 0.1  # RMSprop's step size on x
    beta: float = 1e-5  # weight decay on x
    gamma: float = 1e-5  # weight of S(x)^2
    rho: float = 0.99  # RMSprop smoothing constant (torch's `alpha`)
    radius: Optional[float] = None  # project onto |x - X0|_inf <= radius after every step
    clip_to_box: bool = False  # clamp to the teacher's feature box after every step
    tv: float = 0.0  # weight of the samples' squared total variation (image-shaped inputs)

    @classmethod
    def checks(cls, config: Any) -> Checks:
        return [("steps", config.steps >= 0, "an integer >= 0"),
                ("lr", config.lr > 0, "a number > 0"),
                ("beta", config.beta >= 0, "a number >= 0"),
                ("gamma", config.gamma >= 0, "a number >= 0"),
                ("rho", 0 <= config.rho < 1, "a number in [0, 1)"),
                ("radius", config.radius is None or config.radius > 0, "null or a number > 0"),
                ("tv", config.tv >= 0, "a number >= 0")]

    @classmethod
    def needs_image(cls, config: Any) -> str | None:
        return "tv" if config.tv > 0 else None


PAIRS = {"best1bin": 1, "best2bin": 2}  # DE/best/p/bin: p difference pairs per mutant
TARGET_UNITS = ("standardised", "raw")


@dataclass
class EvolutionConfig(StrategyConfig):
    """Differential evolution of each batch (strategies/evolution.py)."""

    name: str = "evolution"
    variant: str = "best1bin"  # best1bin (DE/best/1/bin) | best2bin (DE/best/2/bin)
    generations: int = 5  # G
    starts: Optional[int] = None  # individuals per DE population; None = the whole batch
    include_starts: bool = False  # the batch: the evolved populations followed by their starts
    mutation: float = 0.5  # F, the differential weight
    crossover: float = 0.7  # CR, the crossover probability
    disagreement: float = 1.0  # a, weight of (T - S)^2
    coverage: float = 0.0  # w, weight of the target-coverage term (0 = off)
    target_low: float = -2.0  # r ~ U(target_low, target_high), in target_units
    target_high: float = 2.0  # the upper end of r's range
    target_units: str = "standardised"  # standardised | raw (the teacher's output units)
    shared_target: bool = False  # one r per population instead of one per individual

    @classmethod
    def checks(cls, config: Any) -> Checks:
        return [("variant", config.variant in PAIRS, f"one of {tuple(PAIRS)}"),
                ("generations", config.generations >= 0, "an integer >= 0"),
                ("starts", config.starts is None
                 or config.starts >= 2 * PAIRS.get(config.variant, 1) + 1,
                 "null or an integer >= 3 (DE/best/1) or >= 5 (DE/best/2): each individual "
                 "needs its own distinct partners"),
                ("mutation", 0 < config.mutation <= 2, "a number in (0, 2]"),
                ("crossover", 0 <= config.crossover <= 1, "a number in [0, 1]"),
                ("disagreement", config.disagreement >= 0, "a number >= 0"),
                ("coverage", config.coverage >= 0, "a number >= 0"),
                ("target_high", config.target_high >= config.target_low,
                 "a number >= strategy.target_low"),
                ("target_units", config.target_units in TARGET_UNITS, f"one of {TARGET_UNITS}")]


@dataclass
class NetworkConfig(StrategyConfig):
    """A strategy that fits a network of its own (strategies/network.py)."""

    latent_dim: int = 50  # z in R^50
    hidden: List[int] = field(default_factory=lambda: [500])  # tanh layers of the network
    steps: int = 1  # the network's optimiser steps (per epoch, or before the student)
    batch_size: int = II("batch_size")  # draws per network step; default: the student's m
    lr: float = 1e-3  # the network's RMSprop step size
    weight_decay: float = 1e-5  # the network's RMSprop weight decay
    rho: float = 0.99  # RMSprop smoothing constant (torch's `alpha`)

    @classmethod
    def checks(cls, config: Any) -> Checks:
        return [("latent_dim", config.latent_dim >= 1, "an integer >= 1"),
                ("hidden", len(config.hidden) >= 1 and all(h >= 1 for h in config.hidden),
                 "a non-empty list of sizes >= 1"),
                ("steps", config.steps >= 0, "an integer >= 0"),
                ("batch_size", config.batch_size >= 1, "an integer >= 1"),
                ("lr", config.lr > 0, "a number > 0"),
                ("weight_decay", config.weight_decay >= 0, "a number >= 0"),
                ("rho", 0 <= config.rho < 1, "a number in [0, 1)")]


GENERATOR_ARCHS = ("mlp", "conv")


@dataclass
class GeneratorConfig(NetworkConfig):
    """Kang & Kang's adversarial generator (strategies/generator.py)."""

    name: str = "generator"
    steps: int = 1  # n_g generator steps per epoch
    beta: float = 1e-5  # weight of ||G(z)||^2
    gamma: float = 1e-5  # weight of S(G(z))^2
    arch: str = "mlp"  # mlp (Kang & Kang's, `hidden`) | conv (image-shaped inputs, `channels`)
    channels: List[int] = field(default_factory=lambda: [32, 16])  # conv only: map widths

    @classmethod
    def checks(cls, config: Any) -> Checks:
        return [*super().checks(config), ("beta", config.beta >= 0, "a number >= 0"),
                ("gamma", config.gamma >= 0, "a number >= 0"),
                ("arch", config.arch in GENERATOR_ARCHS, f"one of {GENERATOR_ARCHS}"),
                ("channels", len(config.channels) >= 1 and all(c >= 1 for c in config.channels),
                 "a non-empty list of sizes >= 1")]

    @classmethod
    def needs_image(cls, config: Any) -> str | None:
        return "arch=conv" if config.arch == "conv" else None


@dataclass
class ImpressionsConfig(NetworkConfig):
    """Data impressions (strategies/impressions.py)."""

    name: str = "impressions"
    steps: int = 2000  # generator steps in `prepare`, before the student
    delta: float = 1e-5  # weight of the KL term

    @classmethod
    def checks(cls, config: Any) -> Checks:
        return [*super().checks(config), ("delta", config.delta >= 0, "a number >= 0")]


REAL_ROW_LABELS = ("teacher", "targets")


@dataclass
class RealRowsConfig(StrategyConfig):
    """The real-data reference (strategies/real_rows.py): not data-free."""

    name: str = "real_rows"
    labels: str = "teacher"  # teacher (KD with the data) | targets (the real y)

    needs_rows: ClassVar[bool] = True

    @classmethod
    def checks(cls, config: Any) -> Checks:
        return [("labels", config.labels in REAL_ROW_LABELS, f"one of {REAL_ROW_LABELS}")]

    @classmethod
    def label(cls, config: Any) -> str:
        return config.name if config.labels == "teacher" else f"{config.name}_{config.labels}"


# strategy= -> its schema
SCHEMAS: dict[str, type[StrategyConfig]] = {
    schema.name: schema for schema in (
        BoundedConfig, EvolutionConfig, GeneratorConfig, ImpressionsConfig, LHSConfig,
        RandomConfig, RealRowsConfig, SobolConfig, UniformConfig)}


def no_rows(name: str) -> UserError:
    """The refusal of a strategy that needs training rows in a run without a dataset."""
    return UserError(f"strategy={name} trains on the dataset's training rows, and dataset=none "
                     "has none; give a dataset, or pick a data-free strategy")
