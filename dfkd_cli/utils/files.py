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


RUN_LOCK = ".dfkd.lock"  # in a run directory: held by the one dfkd process writing there
_held: dict[Path, object] = {}  # run directories this process holds, their open lock files


def hold_run_lock(folder: str | Path) -> None:
    """Hold, for the rest of this process, an exclusive lock on <folder>/.dfkd.lock (holding it
    already: nothing to do). Another process holding it: a UserError naming the folder and its
    pid, so two processes never write one run directory (one run would be lost). The kernel
    releases the lock when the holder exits, however it ends. A folder dfkd cannot write is left
    unlocked (writing there fails with its own line)."""
    folder = Path(folder).absolute()
    if folder in _held:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / RUN_LOCK, "a+")
    except OSError:
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise UserError(f"{folder} is in use by another dfkd process"
                        f"{f' (pid {holder})' if holder else ''}: two runs writing one run "
                        "directory would lose one; wait for it to end, or set "
                        "hydra.run.dir=<another folder>") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[folder] = handle


def release_run_lock(folder: str | Path) -> None:
    """Let go of a run directory's lock (a multirun job that ended, in a worker that goes on to
    the next job)."""
    handle = _held.pop(Path(folder).absolute(), None)
    if handle is not None:
        handle.close()  # closing the file releases the flock


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
