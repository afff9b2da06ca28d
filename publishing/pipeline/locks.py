"""Host-wide locks that the kernel drops when their process dies (flock), for workspaces and build uids."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


def try_lock(path: Path, *, folder: bool, wait: bool = False, create: bool = True) -> int | None:
    """An fd holding an exclusive flock on `path` (a folder, or a lock file created 0600 if missing and
    `create`, else FileNotFoundError); None if another open file holds it and `wait` is false. Never
    follows a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY if folder else os.O_RDWR | (os.O_CREAT if create else 0)
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd
