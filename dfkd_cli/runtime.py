"""Run-time set-up shared by the commands: device choice, seeding, progress bars."""

from __future__ import annotations

import random
import sys
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from dfkd_cli.errors import UserError


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda when available, else cpu; an explicit cuda without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"device={spec} but no CUDA GPU is available; use device=cpu or "
                            "device=auto")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device={spec} but only {torch.cuda.device_count()} GPU(s) exist")
        return torch.device(spec)
    raise UserError(f"device={spec!r} is not valid: expected auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def progress(iterable: Iterable, enabled: bool, **kwargs) -> Iterable:
    """A tqdm bar when `enabled` and stderr is a terminal; the bare iterable otherwise."""
    show = enabled and sys.stderr.isatty()
    return tqdm(iterable, disable=not show, dynamic_ncols=True, leave=False, **kwargs)
