"""Shared fixtures: the config composer, a tiny teacher store made once, the dfkd command."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (MNIST's format), gzip-compressed when the name ends .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(folder: Path, rows: int = 300) -> Path:
    """<folder>/mnist/ holding t10k IDX files of `rows` blurry 28 x 28 'digits' whose brightness
    pattern depends on the label, so a network can learn something in a few steps."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, rows)
    grid = np.linspace(0, 1, 28)
    images = 255 * np.clip(np.sin(np.outer(grid, grid)[None] * (1 + labels[:, None, None]))
                           + 0.2 * rng.standard_normal((rows, 28, 28)), 0, 1)
    (folder / "mnist").mkdir(parents=True, exist_ok=True)
    write_idx(folder / "mnist" / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "mnist" / "t10k-labels-idx1-ubyte.gz", labels)
    return folder


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
