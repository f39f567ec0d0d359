"""Safe files: atomic writes (write beside the target, then rename, so a crash never leaves half
a file) and an exclusive lock for work that concurrent processes must do only once."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
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


def open_lock_file(path: Path):
    """Open (creating) a lock file for reading and writing without following a symbolic link;
    a link, or anything but a plain file with one name, is refused (locking truncates and
    writes the file: through a link that would be another file's content)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{path} is a symbolic link; dfkd's lock is a plain file it "
                            "creates: remove the link") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise UserError(f"{path} is not a plain file of its own (a device, or a hard link to "
                        "another file); dfkd's lock is a plain file it creates: remove it")
    return os.fdopen(fd, "r+")


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
        handle = open_lock_file(path)
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
        handle = open_lock_file(folder / RUN_LOCK)
    except OSError:
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read(32).strip()
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


def release_run_locks() -> None:
    """Let go of every run directory this process holds (a command that ends inside a longer
    process, as the tests run it; a process that exits releases them anyway)."""
    for folder in list(_held):
        release_run_lock(folder)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
