"""The one exception type for problems the user can fix (bad config, missing file), and the
one-line explanation of the other failures a user can fix: no memory, no disk, no permission."""

from __future__ import annotations

import errno
import functools
import sys
from typing import Callable

# what an allocator says when memory runs out: torch (CPU and CUDA) and Python
OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "cannot allocate memory")
# the errors of a file that cannot be written or read for reasons outside dfkd
FILE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT,
               errno.ENOTDIR, errno.EISDIR)


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, nothing trained."""


def reason(exc: BaseException, limit: int = 400) -> str:
    """The exception's reason on one line: its message's first line, and its last line and its
    cause where there are more ("Error in call to target 'Linear':" says nothing without the
    TypeError under it; TorchScript puts the error after the script's frames), or its type's
    name when the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    parts = lines[:1] + lines[-1:] if len(lines) > 1 else lines
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in " ".join(lines):
        parts.append(reason(cause, limit))
    text = " ... ".join(parts) if parts else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in OUT_OF_MEMORY))


def explain(exc: BaseException, memory_hint: str = "") -> str | None:
    """One line for a failure the user can fix (a UserError, memory running out, a file that
    cannot be written), or None for anything else: a bug, whose traceback should be seen."""
    if isinstance(exc, UserError):
        return str(exc)
    if is_out_of_memory(exc):
        return f"out of memory ({reason(exc)})" + (f"; {memory_hint}" if memory_hint else "")
    if isinstance(exc, OSError) and exc.errno in FILE_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{where}: {exc.strerror or reason(exc)}"
    return None


def one_line_errors(prog: str, rewrite: Callable[[str], str] = str) -> Callable:
    """Decorate an argparse command's `main(argv) -> exit code`: a UserError it raises prints
    `<prog>: error: <message>` (`rewrite` can reword it) on stderr and returns 2."""

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapped(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except UserError as exc:
                print(f"{prog}: error: {rewrite(str(exc))}", file=sys.stderr)
                return 2
        return wrapped

    return decorate
