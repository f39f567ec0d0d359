"""What `resume=true` may change: a resumed run continues the stored one bit for bit, so only keys
that do not change the result may differ from the config the run started with.

Hydra writes the new config over `.hydra/config.yaml` before the run starts, so the config the run
started with travels inside its `checkpoint.pt` (and, once finished, its `student.pt`). A resume
whose config differs in any other key is refused, naming the keys, and the run's `.hydra/` files
are put back as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from dfkd_cli.errors import UserError
from dfkd_cli.utils.files import atomic_path

# keys that do not change what a run computes: display, CPU threads (speed; at most rounding in
# the last bits), malloc tuning, when checkpoints are written, where the (same) data and teachers
# are found, and resume itself
MAY_CHANGE = ("resume", "progress", "threads", "keep_freed_memory", "checkpoint_every",
              "data_dir", "teacher_store")


def saved(cfg) -> dict[str, Any]:
    """What a checkpoint keeps of the run's config: the YAML (as Hydra saves it) and the
    command-line overrides."""
    overrides = (list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None)
    return {"config": OmegaConf.to_yaml(cfg), "overrides": overrides}


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= _flat(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: node}


def _values(config) -> dict[str, Any]:
    try:
        return _flat(OmegaConf.to_container(config, resolve=True))
    except Exception:  # noqa: BLE001 - an interpolation that needs Hydra's context: compare as written
        return _flat(OmegaConf.to_container(config, resolve=False))


def differences(old_yaml: str, cfg) -> dict[str, tuple[Any, Any]]:
    """key -> (stored value, new value) for every key outside MAY_CHANGE that differs."""
    old, new = _values(OmegaConf.create(old_yaml)), _values(cfg)
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if key.split(".")[0] not in MAY_CHANGE and old.get(key) != new.get(key)}


def check(cfg, run_dir: Path, stored: dict[str, Any] | None) -> None:
    """Refuse a resume whose config differs from the stored run's (`stored`: the dict `saved`
    made, or None when the run kept none) in a key that changes the result."""
    if not stored or not stored.get("config"):
        return
    changed = differences(stored["config"], cfg)
    if not changed:
        return
    hydra_dir = run_dir / ".hydra"
    if hydra_dir.is_dir():  # Hydra overwrote them with the refused config: put them back
        with atomic_path(hydra_dir / "config.yaml") as tmp:
            tmp.write_text(stored["config"])
        if stored.get("overrides") is not None:
            with atomic_path(hydra_dir / "overrides.yaml") as tmp:
                tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(list(stored["overrides"]))))
    shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
    raise UserError(f"resume=true with another config than the run in {run_dir} started with "
                    f"({shown}); a resume continues that run, so only {', '.join(MAY_CHANGE)} "
                    "may change: rerun with its overrides, or start a new run directory")
