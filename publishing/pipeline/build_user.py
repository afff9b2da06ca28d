"""Who runs a build: the user an unsandboxed build switches to, and what that user is handed.

A root worker runs an unsandboxed build as `PUBLISHING_BUILD_USER` (root ignores RLIMIT_NPROC, and only
another user is kept away from the worker's files); a sandboxed one as a uid leased for it (sandbox.py).
Either gets its checkout and HOME, and nothing else of the workspace. subprocess switches the user in C
between fork and exec; the Python that sets the limits must be one that user can execute.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from publishing.exceptions import PermanentJobError
from publishing.pipeline.build_limits import WORKER_USER

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """A build's user and primary group."""

    uid: int
    gid: int
    name: str


def resolve_user(user: str) -> Identity | None:
    """Who the build runs as: None for the worker's own user; PermanentJobError if that cannot be."""
    euid = os.geteuid()
    entry = None
    if user.strip() == WORKER_USER:
        if euid == 0:
            logger.warning(
                "Builds run as root (PUBLISHING_BUILD_USER=worker): the process limit does not hold "
                "and a build can read the worker's secrets"
            )
        return None
    if not user.strip() and euid == 0:
        raise PermanentJobError(
            "the worker runs as root and PUBLISHING_BUILD_USER is not set: set it to a dedicated user "
            "(or to `worker` to run builds as root knowingly)",
            code="BUILD_USER_INVALID",
        )
    if user.strip():
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise PermanentJobError(
                f"build user {user!r} does not exist", code="BUILD_USER_INVALID"
            ) from None
    if entry is None or entry.pw_uid == euid:
        if euid == 0:
            logger.warning(
                "Builds run as root (PUBLISHING_BUILD_USER=%s): the process limit does not hold", user
            )
        return None
    if euid != 0:
        raise PermanentJobError(
            f"the worker runs as uid {euid} and cannot run builds as {user!r}: that needs root",
            code="BUILD_USER_INVALID",
        )
    return Identity(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)


def _can_search(path: Path, identity: Identity) -> bool:
    """Whether `identity` may enter `path`, or execute it if it is a file (primary group only: builds get
    no supplementary groups)."""
    st = path.stat()
    if st.st_uid == identity.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == identity.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _chown_tree(root: Path, identity: Identity) -> None:
    # fwalk works on directory fds and never follows a symlink, so a link in the repository cannot
    # make us chown anything outside it.
    for _, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        os.fchown(dirfd, identity.uid, identity.gid)
        for name in dirnames + filenames:
            os.chown(name, identity.uid, identity.gid, dir_fd=dirfd, follow_symlinks=False)


def hand_over(cwd: Path, home: Path, identity: Identity) -> None:
    """Give the build user its checkout and HOME, and a way to reach them; nothing else of the workspace.

    The workspace itself stays the worker's (mode 0711): the build cannot list it or create the
    package step's output folder there.
    """
    workspace = cwd.parent
    blocked = [str(p) for p in workspace.parents if not _can_search(p, identity)]
    if blocked:
        raise PermanentJobError(
            f"build user {identity.name!r} cannot reach the workspace: {blocked[0]} is not searchable "
            "by it; set PUBLISHING_WORKSPACE_DIR to a directory it can enter",
            code="BUILD_USER_INVALID",
        )
    workspace.chmod(0o711)
    _chown_tree(cwd, identity)
    _chown_tree(home, identity)


def _can_run(path: str, identity: Identity | None) -> bool:
    """Whether `identity` (None: this process) may execute the file `path`, following its symlinks."""
    real = Path(os.path.realpath(path))
    if not os.path.isfile(real):  # also False where a folder on the way is closed to this process
        return False
    if identity is None:
        return os.access(real, os.X_OK)
    return all(_can_search(p, identity) for p in (real, *real.parents, *Path(path).parents))


def wrapper_interpreter(identity: Identity | None, path: str) -> str:
    """The Python that runs the exec wrapper (build_command.py): the worker's own, else the first python3
    on `path`, that the build's user can execute; PermanentJobError if there is none."""
    # The worker's interpreter may live where only the worker can reach (a venv under /root); the
    # wrapper needs nothing of it, any python3 will do.
    candidates = [sys.executable] if sys.executable else []
    candidates += [os.path.join(folder, "python3") for folder in path.split(os.pathsep) if folder]
    for candidate in candidates:
        if _can_run(candidate, identity):
            return candidate
    user = repr(identity.name) if identity else "the worker's user"
    raise PermanentJobError(
        f"build user {user} can execute neither {sys.executable!r} nor a python3 on PATH, and one sets "
        "the build's limits",
        code="BUILD_USER_INVALID",
    )
