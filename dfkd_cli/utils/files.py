"""Safe files: atomic writes (write beside the target, then rename, so a crash never leaves half
a file) and an exclusive lock for work that concurrent processes must do only once."""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

from dfkd_cli.errors import UserError, reason

# what torch.save says when its archive cannot be written (a full disk: "unexpected pos ...")
TORCH_WRITE_FAILED = ("inline_container.cc", "PytorchStreamWriter")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success. The file
    gets the permissions of any new file (0666 less the umask), not mkstemp's private 0600. A
    write that fails for want of space or permission is a UserError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"could not write {path}: {exc.strerror or exc}") from exc
    except RuntimeError as exc:
        if not any(s in str(exc) for s in TORCH_WRITE_FAILED):
            raise
        raise UserError(f"could not write {path} (is the disk full?): "
                        f"{reason(exc)}") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the block. The kernel
    releases it if the process dies, so a killed job never leaves a stale lock behind. In a
    folder dfkd cannot write (a read-only teacher store) the block runs unlocked: nobody with
    these rights can write there either, and a write the block tries fails with one line."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError:
        if not path.parent.is_dir():
            raise
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
