"""Shared fixtures: the config composer, a tiny teacher store made once, the dfkd command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from dfkd_cli.config import register_configs

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets"
DFKD = shutil.which("dfkd") or str(Path(sys.executable).with_name("dfkd"))

# A short run: the protocol's shape at a fraction of its length.
QUICK_TEACHER = ["epochs=3", "batch_size=64", "teacher.hidden=[64]"]
QUICK_DISTILL = ["epochs=6", "steps_per_epoch=3", "log_every=2", "teacher.hidden=[64]"]


def make_config(name: str, overrides: list[str] = ()):
    """Compose a command's config exactly as the CLI does, without running it."""
    register_configs()
    with initialize_config_module(config_module="dfkd_cli.configs", version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def dfkd(*args: str, cwd: Path, env: dict | None = None, check: bool = True):
    """Run the installed `dfkd` command in a subprocess; returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DFKD_DATA_DIR", "HYDRA_FULL_ERROR")}
    full_env.update(env or {})
    proc = subprocess.run([DFKD, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"dfkd {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """A working directory whose teacher store holds a quick friedman teacher for seed 1."""
    root = tmp_path_factory.mktemp("dfkd")
    dfkd("train-teacher", *QUICK_TEACHER, cwd=root)
    return root
