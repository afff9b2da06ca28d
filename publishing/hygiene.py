"""What every long-lived process of the service does first, so that nothing of it is readable by others.

- Non-dumpable: another process of the same uid (an unsandboxed build, another local user's
  program) can neither read its memory or `/proc/<pid>/environ`, where SECRET_KEY and
  DATABASE_URL are, nor ptrace it; forks inherit this (an exec does not, hence the masters'
  own entry points).
- umask 077: the files and folders it creates (the SQLite database and its WAL, the store's
  artifacts, Redis's embedded socket) are its own user's only.
- VAR_DIR 0700 and the SQLite files 0600, also when an earlier version made them wider.

Importing this module imports nothing of Django: the Dramatiq and gunicorn masters use it before
any settings exist.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

_PR_SET_DUMPABLE = 4


def make_non_dumpable() -> bool:
    """Make this process non-dumpable; False (and a warning) where the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning("Could not make process %d non-dumpable: errno %s", os.getpid(), ctypes.get_errno())
        return False
    return True


def harden_process() -> None:
    """Non-dumpable, umask 077. Cheap and idempotent: every entry point of a process may call it."""
    make_non_dumpable()
    os.umask(0o077)


def private_state(var_dir: Path, files: list[Path]) -> None:
    """Close VAR_DIR (0700) and `files` (0600, with their SQLite journals) to every other user.

    Only what this process's uid owns: a web process running as another user leaves them alone.
    """
    for path, mode in [(var_dir, 0o700), *((f, 0o600) for f in _with_journals(files))]:
        with contextlib.suppress(FileNotFoundError):
            st = path.lstat()
            if (
                st.st_uid == os.geteuid()
                and not stat.S_ISLNK(st.st_mode)
                and stat.S_IMODE(st.st_mode) != mode
            ):
                path.chmod(mode)


def _with_journals(files: list[Path]) -> list[Path]:
    ends = ("", "-wal", "-shm", "-journal")
    return [Path(f"{path}{end}") for path in files for end in ends]
