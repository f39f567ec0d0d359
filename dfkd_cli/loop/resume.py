"""What `resume=true` may change: a resumed run continues the stored one bit for bit, so only keys
that do not change the result may differ from the config the run started with.

Hydra writes the new config over `.hydra/config.yaml` before the run starts, so the config the run
started with travels inside its `checkpoint.pt` (and, once finished, its `student.pt`). A resume
whose config differs in any other key is refused, naming the keys, and every one of the run's
`.hydra/` files is put back as it was (as the run-start callback read them before Hydra wrote;
else as the checkpoint kept them).
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
# are found, and resume (and overwrite) itself
MAY_CHANGE = ("resume", "overwrite", "progress", "progress_every", "threads",
              "keep_freed_memory", "checkpoint_every", "data_dir", "teacher_store")


HYDRA_DIR = ".hydra"
# run directory -> its .hydra/ files (name -> text; None: no .hydra/) as they were before Hydra
# wrote this command's, read by the run-start callback (dfkd_cli/tracking/callbacks.py)
BEFORE: dict[Path, dict[str, str] | None] = {}


def hydra_files(run_dir: Path) -> dict[str, str] | None:
    """The run directory's .hydra/ files, name -> text (None when it has no .hydra/)."""
    folder = Path(run_dir) / HYDRA_DIR
    if not folder.is_dir():
        return None
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file()}


def remember_hydra_files(run_dir: str | Path) -> None:
    """Keep the run directory's .hydra/ files as they are now, before Hydra writes this
    command's over them, so a refused run can put every one of them back."""
    run_dir = Path(run_dir).absolute()
    BEFORE[run_dir] = hydra_files(run_dir)


def saved(cfg) -> dict[str, Any]:
    """What a checkpoint keeps of the run's config: the YAML (as Hydra saves it), the
    command-line overrides and the run's .hydra/ files."""
    initialized = HydraConfig.initialized()
    overrides = list(HydraConfig.get().overrides.task) if initialized else None
    files = hydra_files(Path(HydraConfig.get().runtime.output_dir)) if initialized else None
    return {"config": OmegaConf.to_yaml(cfg), "overrides": overrides, "hydra_files": files}


def put_back(run_dir: Path, stored: dict[str, Any] | None) -> None:
    """Put the run directory's .hydra/ files back as they were before this (refused) command:
    every file as the run-start callback read it, else as the run's checkpoint kept them (its
    config and overrides for a checkpoint written before it kept them all)."""
    run_dir = Path(run_dir).absolute()
    folder = run_dir / HYDRA_DIR
    if run_dir in BEFORE:
        files = BEFORE[run_dir]
        if files is None:  # there was none: remove what Hydra wrote
            for path in folder.glob("*") if folder.is_dir() else []:
                path.unlink()
            if folder.is_dir():
                folder.rmdir()
            return
        for path in folder.glob("*"):
            if path.is_file() and path.name not in files:
                path.unlink()
    elif stored and stored.get("hydra_files"):
        files = dict(stored["hydra_files"])
    elif stored and stored.get("config"):
        files = {"config.yaml": stored["config"]}
        if stored.get("overrides") is not None:
            files["overrides.yaml"] = OmegaConf.to_yaml(
                OmegaConf.create(list(stored["overrides"])))
    else:
        return
    if not folder.is_dir():
        return
    for name, text in files.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_text(text)


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
    put_back(run_dir, stored)  # Hydra overwrote .hydra/ with the refused config
    shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
    raise UserError(f"resume=true with another config than the run in {run_dir} started with "
                    f"({shown}); a resume continues that run, so only {', '.join(MAY_CHANGE)} "
                    "may change: rerun with its overrides, or start a new run directory")
