"""Workspaces: one private folder per attempt, removed afterwards, or by the next sweep if its worker died.

A live workspace is flocked by the process that runs its attempt; the kernel drops that lock when
the process dies, SIGKILL included. `sweep` (at worker start and on every reconciler pass) removes
each workspace whose lock it can take. A workspace gets its `publishing-` name only once it is
locked (it is created as `creating-…` and renamed), so a sweep never sees one that is unlocked
because it is new.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from publishing.exceptions import PermanentJobError
from publishing.pipeline.locks import try_lock

logger = logging.getLogger(__name__)

PREFIX = "publishing-"
CREATING = "creating-"
# A `creating-` folder this old lost its worker between mkdtemp and its rename.
CREATING_GRACE = 3600.0


def workspace_root() -> Path:
    """PUBLISHING_WORKSPACE_DIR, or a folder of this uid's in the system's temporary folder.

    Folders it creates are 0711: builds of other uids may pass through them to their own checkout
    but not list them. A folder that exists is used as it is, never changed.
    """
    default = Path(tempfile.gettempdir()) / f"publisher-{os.geteuid()}"
    root = Path(settings.PUBLISHING_WORKSPACE_DIR or default)
    for folder in [*reversed(root.parents), root]:
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
            folder.chmod(0o711)  # mkdir's mode goes through the umask (077)
    st = root.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        # In a shared temporary folder another user could have made it first, and read every checkout.
        raise PermanentJobError(
            f"workspace folder {root} is not a folder owned by this worker's uid {os.geteuid()}",
            code="WORKSPACE_INVALID",
        )
    return root


def remove_tree(path: Path) -> None:
    """Remove `path` and everything below it, however deep a build nested its folders.

    shutil.rmtree recurses once per level (RecursionError past about a thousand, even with
    ignore_errors); rm does not, and never crosses into another file system.
    """
    try:
        shutil.rmtree(path, ignore_errors=True)
    except RecursionError:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A new private folder for one attempt, locked while the block runs and removed after it."""
    root = workspace_root()
    fresh = Path(tempfile.mkdtemp(prefix=CREATING, dir=root))
    fd = try_lock(fresh, folder=True, wait=True)
    assert fd is not None  # noqa: S101 - a blocking flock returns a lock or raises
    path = root / (PREFIX + fresh.name.removeprefix(CREATING))
    try:
        fresh.rename(path)
        yield path
    finally:
        try:
            remove_tree(path if path.exists() else fresh)
        finally:
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
                    remove_tree(Path(entry.path))
                    removed.append(entry.name)
            continue
        if not entry.name.startswith(PREFIX):
            continue
        try:
            fd = try_lock(Path(entry.path), folder=True)
        except FileNotFoundError:
            continue  # removed by its owner meanwhile
        if fd is None:
            continue  # its attempt is running
        try:
            remove_tree(Path(entry.path))
        finally:
            os.close(fd)
        removed.append(entry.name)
    if removed:
        logger.warning(
            "Removed %d workspace(s) left by a worker that died: %s", len(removed), ", ".join(removed)
        )
    return removed
