"""The records a command builds once from its composed config and hands down: the layers below
take these (or one group of the config, such as `strategy` or `optimizer`), never the config
itself, so a signature says what a function depends on. Every command reads its config here or
in its own module, nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dfkd_cli.loop import population
from dfkd_cli.loop.settings import Alpha, LoopSettings, StopRule
from dfkd_cli.strategies.labels import alpha_label, arm_label
from dfkd_cli.teachers.loader import TeacherSource
from dfkd_cli.teachers.store import TeacherStore


def members(cfg, run_dir: str | Path) -> population.Members:
    """The run's members (`seed`, or the population `seeds`) and their directories."""
    return population.members(cfg.seed, cfg.seeds, run_dir)


def alpha(cfg) -> Alpha:
    return Alpha(cfg.alpha.schedule, float(cfg.alpha.value), cfg.alpha.get("horizon"))


def loop_settings(cfg) -> LoopSettings:
    """What the student loop of `dfkd distill` and `dfkd probe` needs of the config."""
    stop = cfg.get("stop", "off") == "plateau"
    return LoopSettings(
        epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch, batch_size=cfg.batch_size,
        alpha=alpha(cfg), optimizer=cfg.optimizer, selection=cfg.selection,
        log_every=cfg.log_every, checkpoint_every=cfg.get("checkpoint_every", 0),
        on_nonfinite=cfg.on_nonfinite,
        stop=StopRule(stop, int(cfg.get("stop_patience", 1)),
                      float(cfg.get("stop_tolerance", 0.0))),
        progress=cfg.progress, progress_every=cfg.progress_every, label=cfg.strategy.name)


def teacher_store(cfg) -> TeacherStore:
    return TeacherStore(cfg.teacher_store, cfg.dataset, cfg.teacher, cfg.data_dir)


def teacher_source(cfg) -> TeacherSource:
    return TeacherSource(cfg.teacher, teacher_store(cfg), cfg.fast_path, cfg.domain_spec)


def labels(cfg) -> dict[str, str]:
    """The arm's names in the run's metrics rows: `arm`, `strategy` and `alpha`."""
    return {"arm": arm_label(cfg.label, cfg.strategy, cfg.alpha, cfg.batch_size),
            "strategy": cfg.strategy.name, "alpha": alpha_label(cfg.alpha)}


def config_text(cfg) -> str:
    """The composed config as YAML, as Hydra saves it (interpolations as written)."""
    return OmegaConf.to_yaml(cfg)


def plain(cfg) -> dict[str, Any]:
    """The composed config as plain containers, interpolations resolved: what trackers log."""
    return OmegaConf.to_container(cfg, resolve=True)
