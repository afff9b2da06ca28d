"""One uid per running build: a root worker leases each sandboxed build a uid of `PUBLISHING_SANDBOX_UIDS`.

No other build on the host holds that uid meanwhile (a lock file per uid, released by the kernel if the
worker dies); whatever a dead worker's build left running as it is killed before the uid is used again,
or by `sweep_uids`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import random
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline.locks import try_lock

logger = logging.getLogger(__name__)

# Host-wide, root's: every worker of the host (whatever its settings) takes build uids from here.
UID_LOCK_DIR = Path("/run/publisher-build-uids")
# How much of /proc/<pid>/status is read: its uid and thread count come long before this.
STATUS_READ = 8192


def _lock_dir(folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        # Anyone else's folder could hand two builds one uid, or none.
        raise PermanentJobError(
            f"{folder} must be a folder of uid {os.geteuid()}", code="SANDBOX_UNAVAILABLE"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        folder.chmod(0o700)  # ours (a fresh volume is 0755): nobody else's to open
    return folder


def _has_account(uid: int) -> bool:
    """Whether an account of this host has `uid` (then PUBLISHING_SANDBOX_UIDS overlaps real users)."""
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    logger.warning("uid %d of PUBLISHING_SANDBOX_UIDS belongs to an account: never used for builds", uid)
    return True


def _status(pid: int | str) -> tuple[int, int] | None:
    """(real uid, threads) of process `pid` from /proc; None once it is gone."""
    # One read and two searches, not a parse of every line: a build's start scans every process of
    # the host twice (its uid's lease, its task allowance), and its watch once every half second.
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, STATUS_READ)
        finally:
            os.close(fd)
        uid_at = data.index(b"\nUid:") + len(b"\nUid:")
        threads_at = data.index(b"\nThreads:") + len(b"\nThreads:")
        # "Uid:\t<real>\t<effective>\t<saved>\t<fs>", "Threads:\t<count>"
        real_uid = int(data[uid_at : data.index(b"\t", uid_at + 1)])
        threads = int(data[threads_at : data.index(b"\n", threads_at)])
    except (OSError, ValueError):
        return None
    return real_uid, threads


def processes_by_uid() -> dict[int, list[tuple[int, int]]]:
    """Real uid -> (pid, threads) of each process /proc shows now (the one scan of /proc for uids)."""
    found: dict[int, list[tuple[int, int]]] = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit() and (status := _status(entry.name)) is not None:
                found.setdefault(status[0], []).append((int(entry.name), status[1]))
    return found


def _kill(processes: list[tuple[int, int]], uid: int) -> int:
    """SIGKILL each of `processes` (pid, threads) that still runs as `uid`; how many were."""
    killed = 0
    for pid, _ in processes:
        # Through a pidfd checked after it is open: a pid reused meanwhile is never signalled.
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone
        try:
            if (status := _status(pid)) is not None and status[0] == uid:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed += 1
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)
    return killed


@contextlib.contextmanager
def lease_uid(uids: range, folder: Path = UID_LOCK_DIR) -> Iterator[int]:
    """Hold a uid of `uids` that no other build on this host holds, for the duration of the block.

    The lock is a flock on `folder/<uid>`: the kernel drops it when the worker dies, so a
    crashed worker's uid is free again, and whatever that build left running is killed first.
    """
    folder = _lock_dir(folder)
    # From a random start: concurrent workers rarely contend for the same lock.
    start = random.randrange(len(uids))  # noqa: S311 - spreading, not secrecy
    for index in range(len(uids)):
        uid = uids[(start + index) % len(uids)]
        if _has_account(uid):
            continue  # its processes are someone's, never a build's to kill
        fd = try_lock(folder / str(uid), folder=False)
        if fd is None:
            continue
        try:
            if left := _kill(processes_by_uid().get(uid, []), uid):
                logger.warning("Killed %d process(es) left running by an earlier build as uid %d", left, uid)
            yield uid
        finally:
            os.close(fd)
        return
    raise TransientJobError(
        f"all {len(uids)} build uids (PUBLISHING_SANDBOX_UIDS) are in use on this host",
        code="SANDBOX_BUSY",
    )


def sweep_uids(uids: range, folder: Path = UID_LOCK_DIR) -> int:
    """Kill the processes of every uid in `uids` that no build holds now; how many were killed."""
    if not folder.is_dir():
        return 0
    running = {
        uid: processes
        for uid, processes in processes_by_uid().items()
        if uid in uids and not _has_account(uid)
    }
    killed = 0
    for uid, processes in running.items():
        fd = try_lock(folder / str(uid), folder=False)
        if fd is None:
            continue  # a build holds it: its processes are alive by right
        try:
            killed += _kill(processes, uid)
        finally:
            os.close(fd)
    return killed
