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
from dfkd_cli.utils import yaml_data
from dfkd_cli.utils.files import atomic_path
from dfkd_cli.utils.run_dirs import RunDirTaken

# keys that do not change what a run computes: display, CPU threads (speed; at most rounding in
# the last bits), malloc tuning, when checkpoints are written, where the (same) data and teachers
# are found, and resume (and overwrite) itself
MAY_CHANGE = ("resume", "overwrite", "progress", "progress_every", "threads",
              "keep_freed_memory", "checkpoint_every", "data_dir", "teacher_store")


HYDRA_DIR = ".hydra"
# the files Hydra writes into a run's .hydra/: the only names a checkpoint can put back
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
HYDRA_FILE_CHARS = 1 << 20  # a saved config is a few kB; a larger text is not one dfkd wrote
# run directory -> its .hydra/ files (name -> text; None: no .hydra/) as they were before Hydra
# wrote this command's, read by the run-start callback (dfkd_cli/tracking/callbacks.py)
BEFORE: dict[Path, dict[str, str] | None] = {}


def hydra_files(run_dir: Path) -> dict[str, str] | None:
    """The run directory's .hydra/ files Hydra writes (HYDRA_FILES), name -> text (None when it
    has no .hydra/ folder); a link or an oversized file is left out."""
    folder = Path(run_dir) / HYDRA_DIR
    if folder.is_symlink() or not folder.is_dir():
        return None
    return {name: (folder / name).read_text() for name in HYDRA_FILES
            if _plain_file(folder / name)}


def _plain_file(path: Path) -> bool:
    return (not path.is_symlink() and path.is_file()
            and path.stat().st_size <= HYDRA_FILE_CHARS)


def kept_files(stored: Any) -> dict[str, str]:
    """The .hydra/ files a checkpoint's run config kept, name -> text: only HYDRA_FILES, only
    texts of at most HYDRA_FILE_CHARS (a checkpoint is data: it never names where to write)."""
    if not isinstance(stored, dict):
        return {}
    files = stored.get("hydra_files")
    if isinstance(files, dict) and files:
        return {name: text for name, text in files.items()
                if name in HYDRA_FILES and isinstance(text, str) and len(text) <= HYDRA_FILE_CHARS}
    config, overrides = stored.get("config"), stored.get("overrides")
    if not isinstance(config, str) or len(config) > HYDRA_FILE_CHARS:
        return {}
    kept = {"config.yaml": config}
    if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides):
        kept["overrides.yaml"] = OmegaConf.to_yaml(OmegaConf.create(list(overrides)))
    return kept


def remember_hydra_files(run_dir: str | Path) -> None:
    """Keep the run directory's .hydra/ files as they are now, before Hydra writes this
    command's over them, so a refused run can put every one of them back."""
    run_dir = Path(run_dir).absolute()
    BEFORE[run_dir] = hydra_files(run_dir)


def saved(config: str) -> dict[str, Any]:
    """What a checkpoint keeps of the run's config: its YAML `config` (as Hydra saves it), the
    command-line overrides and the run's .hydra/ files."""
    initialized = HydraConfig.initialized()
    overrides = list(HydraConfig.get().overrides.task) if initialized else None
    files = hydra_files(Path(HydraConfig.get().runtime.output_dir)) if initialized else None
    return {"config": config, "overrides": overrides, "hydra_files": files}


def put_back(run_dir: Path, stored: dict[str, Any] | None) -> None:
    """Put the run directory's .hydra/ files back as they were before this (refused) command:
    every file as the run-start callback read it, else as the run's checkpoint kept them (its
    config and overrides for a checkpoint written before it kept them all)."""
    run_dir = Path(run_dir).absolute()
    folder = run_dir / HYDRA_DIR
    if folder.is_symlink() or not folder.is_dir():
        return
    if run_dir in BEFORE:
        files = BEFORE[run_dir]
        if files is None:  # there was none: remove what Hydra wrote
            for name in HYDRA_FILES:
                (folder / name).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
            return
        for name in HYDRA_FILES:
            if name not in files:
                (folder / name).unlink(missing_ok=True)
    else:
        files = kept_files(stored)
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


def differences(old_yaml: str, new_yaml: str) -> dict[str, tuple[Any, Any]]:
    """key -> (stored value, new value) for every key outside MAY_CHANGE that differs. Both
    configs are compared as written: the stored one is data, so an interpolation in it is
    never resolved (it would read the environment), and the new one's is left alike."""
    stored = yaml_data.load_text(old_yaml, "the run's saved config")
    if not isinstance(stored, dict):
        raise UserError("the run's saved config is not a mapping of keys; start a new run "
                        "directory")
    old, new = _flat(stored), _flat(yaml_data.load_text(new_yaml, "this run's config"))
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if key.split(".")[0] not in MAY_CHANGE and old.get(key) != new.get(key)}


def check(config: str, run_dir: Path, stored: dict[str, Any] | None) -> None:
    """Refuse a resume whose config (the YAML `config`) differs from the stored run's
    (`stored`: the dict `saved` made, or None when the run kept none) in a key that changes the
    result."""
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), str):
        return
    try:
        changed = differences(stored["config"], config)
    except UserError as exc:
        put_back(run_dir, stored)
        raise RunDirTaken(f"cannot resume the run in {run_dir}: {exc}") from exc
    if not changed:
        return
    put_back(run_dir, stored)  # Hydra overwrote .hydra/ with the refused config
    shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
    raise RunDirTaken(f"resume=true with another config than the run in {run_dir} started with "
                    f"({shown}); a resume continues that run, so only {', '.join(MAY_CHANGE)} "
                    "may change: rerun with its overrides, or start a new run directory")
