"""Workspaces: one private folder per attempt, removed afterwards, or by the next sweep if its worker died.

A live workspace is flocked by the process that runs its attempt; the kernel drops that lock when
the process dies, SIGKILL included. `sweep` (at worker start and on every reconciler pass) removes
each workspace whose lock it can take. A workspace gets its `publishing-` name only once it is
locked (it is created as `creating-…` and renamed), so a sweep never sees one that is unlocked
because it is new.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from publishing.exceptions import PermanentJobError

logger = logging.getLogger(__name__)

PREFIX = "publishing-"
CREATING = "creating-"
# A `creating-` folder this old lost its worker between mkdtemp and its rename.
CREATING_GRACE = 3600.0


def workspace_root() -> Path:
    """PUBLISHING_WORKSPACE_DIR, or a folder of this uid's in the system's temporary folder.

    0711: builds of other uids may pass through it to their own checkout but not list it.
    """
    root = Path(
        settings.PUBLISHING_WORKSPACE_DIR or Path(tempfile.gettempdir()) / f"publisher-{os.geteuid()}"
    )
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    st = root.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        # In a shared temporary folder another user could have made it first, and read every checkout.
        raise PermanentJobError(
            f"workspace folder {root} is not a folder owned by this worker's uid {os.geteuid()}",
            code="WORKSPACE_INVALID",
        )
    if stat.S_IMODE(st.st_mode) != 0o711:
        root.chmod(0o711)
    return root


def _lock(path: Path, *, wait: bool) -> int | None:
    """An fd holding an exclusive flock on the folder `path`; None if another process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A new private folder for one attempt, locked while the block runs and removed after it."""
    root = workspace_root()
    fresh = Path(tempfile.mkdtemp(prefix=CREATING, dir=root))
    fd = _lock(fresh, wait=True)
    assert fd is not None  # noqa: S101 - a blocking flock returns a lock or raises
    path = root / (PREFIX + fresh.name.removeprefix(CREATING))
    try:
        fresh.rename(path)
        yield path
    finally:
        shutil.rmtree(path if path.exists() else fresh, ignore_errors=True)
        os.close(fd)


def sweep() -> list[str]:
    """Remove the workspaces of attempts whose process is gone; their names."""
    root = workspace_root()
    removed = []
    now = time.time()
    for entry in os.scandir(root):
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith(CREATING):
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > CREATING_GRACE:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.name)
            continue
        if not entry.name.startswith(PREFIX):
            continue
        try:
            fd = _lock(Path(entry.path), wait=False)
        except FileNotFoundError:
            continue  # removed by its owner meanwhile
        if fd is None:
            continue  # its attempt is running
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(entry.name)
    if removed:
        logger.warning(
            "Removed %d workspace(s) left by a worker that died: %s", len(removed), ", ".join(removed)
        )
    return removed
