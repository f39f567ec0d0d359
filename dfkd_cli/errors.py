"""The one exception type for problems the user can fix (bad config, missing file), and the
one-line explanation of the other failures a user can fix: no memory, no disk, no permission."""

from __future__ import annotations

import errno

# what an allocator says when memory runs out: torch (CPU and CUDA) and Python
OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "cannot allocate memory")
# the errors of a file that cannot be written or read for reasons outside dfkd
FILE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT,
               errno.ENOTDIR, errno.EISDIR)


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, nothing trained."""


def first_line(exc: BaseException) -> str:
    """The first line of the exception's message, or its type's name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in OUT_OF_MEMORY))


def explain(exc: BaseException, memory_hint: str = "") -> str | None:
    """One line for a failure the user can fix (a UserError, memory running out, a file that
    cannot be written), or None for anything else: a bug, whose traceback should be seen."""
    if isinstance(exc, UserError):
        return str(exc)
    if is_out_of_memory(exc):
        return f"out of memory ({first_line(exc)})" + (f"; {memory_hint}" if memory_hint else "")
    if isinstance(exc, OSError) and exc.errno in FILE_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{where}: {exc.strerror or first_line(exc)}"
    return None
