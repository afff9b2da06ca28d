"""The sandbox's bookkeeping: one uid per running build, leftovers killed, dead workspaces swept."""

from __future__ import annotations

import logging
import os
import pwd
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline import workspace as workspaces
from publishing.pipeline.sandbox import SandboxPolicy, describe
from publishing.pipeline.sandbox_uids import lease_uid, processes_by_uid, sweep_uids
from tests.support.prerequisites import require_root

needs_root = pytest.mark.needs_root("running a process as another uid needs root")
# Far from the default range and from accounts: these tests' own uids.
FREE = range(3_900_000_000, 3_900_000_003)


def test_concurrent_builds_never_share_a_uid(tmp_path):
    # Given as many builds as uids, all holding theirs at once
    held: list[int] = []
    entered = threading.Barrier(len(FREE) + 1)
    leave = threading.Event()

    def build() -> None:
        with lease_uid(FREE, folder=tmp_path) as uid:
            held.append(uid)
            entered.wait(10)
            leave.wait(10)

    threads = [threading.Thread(target=build) for _ in FREE]
    for thread in threads:
        thread.start()
    entered.wait(10)

    # When one more build asks
    with pytest.raises(TransientJobError) as excinfo, lease_uid(FREE, folder=tmp_path):
        pass
    leave.set()
    for thread in threads:
        thread.join(10)

    # Then each held its own, and the next one is told to come back (a retried error)
    assert sorted(held) == list(FREE)
    assert excinfo.value.code == "SANDBOX_BUSY"


def test_a_uid_that_belongs_to_an_account_is_never_used(tmp_path, caplog):
    # Given a range that overlaps an account (nobody)
    nobody = pwd.getpwnam("nobody").pw_uid

    # When / Then a build never gets that uid, and the log says why
    with caplog.at_level(logging.WARNING), pytest.raises(TransientJobError):  # noqa: SIM117
        with lease_uid(range(nobody, nobody + 1), folder=tmp_path):
            pass
    assert f"uid {nobody} of PUBLISHING_SANDBOX_UIDS belongs to an account" in caplog.text


def test_the_lock_folder_is_closed_to_others_and_must_be_the_workers(tmp_path):
    # Given a lock folder of ours that others could open (a fresh Docker volume is 0755)
    ours = tmp_path / "ours"
    ours.mkdir()
    ours.chmod(0o755)

    # When a build leases a uid there, then it is the worker's only
    with lease_uid(FREE, folder=ours):
        pass
    assert stat.S_IMODE(ours.stat().st_mode) == 0o700

    # And a folder of another user is refused: it could hand two builds one uid
    require_root("chown to another user needs root")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(PermanentJobError) as excinfo, lease_uid(FREE, folder=theirs):
        pass
    assert excinfo.value.code == "SANDBOX_UNAVAILABLE"


def _sleeping_as(uid: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[], start_new_session=True)


def _gone(process: subprocess.Popen[bytes], within: float = 5.0) -> bool:
    try:
        process.wait(within)
    except subprocess.TimeoutExpired:
        return False
    return True


def _threads_of_this_process() -> int:
    line = next(
        line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Threads:")
    )
    return int(line.split()[1])


def test_the_scan_of_processes_finds_each_under_its_real_uid_with_its_threads():
    # Given this process, with one thread more than it had
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    before = _threads_of_this_process()
    thread.start()
    try:
        # When /proc is scanned
        found = processes_by_uid()

        # Then this process is under its real uid, with every thread it runs now
        assert (os.getpid(), before + 1) in found[os.getuid()]
        assert all(
            pid != os.getpid()
            for uid, processes in found.items()
            if uid != os.getuid()
            for pid, _ in processes
        )
    finally:
        release.set()
        thread.join()


@needs_root
def test_leasing_a_uid_kills_what_an_earlier_build_left_running_as_it(tmp_path):
    # Given a process of a uid that no build holds (its worker died)
    uid = FREE[0]
    left = _sleeping_as(uid)
    try:
        # When a build leases that uid
        with lease_uid(range(uid, uid + 1), folder=tmp_path) as leased:
            # Then the leftover is gone before the build starts
            assert leased == uid
            assert _gone(left)
    finally:
        left.kill()
        left.wait()


@needs_root
def test_the_sweep_kills_processes_of_free_uids_and_spares_held_ones(tmp_path):
    # Given one uid held by a running build and another free, each with a process
    held_uid, free_uid = FREE[0], FREE[1]
    with lease_uid(range(held_uid, held_uid + 1), folder=tmp_path):
        running, left = _sleeping_as(held_uid), _sleeping_as(free_uid)
        try:
            # When the reconciler sweeps
            killed = sweep_uids(FREE, folder=tmp_path)

            # Then only the free uid's process was killed
            assert killed == 1
            assert _gone(left)
            assert running.poll() is None
        finally:
            for process in (running, left):
                process.kill()
                process.wait()


def test_a_dead_attempts_workspace_is_swept_and_a_live_one_is_not(settings, tmp_path):
    # Given a workspace of a live attempt, and one whose process was SIGKILLed mid-way
    settings.PUBLISHING_WORKSPACE_DIR = str(tmp_path / "workspaces")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only holds a workspace until it is killed
        with workspaces.workspace() as folder:
            os.write(write_end, folder.name.encode())
            time.sleep(60)
        os._exit(0)
    os.close(write_end)
    dead = os.read(read_end, 256).decode()
    os.close(read_end)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with workspaces.workspace() as live:
        # When a sweep runs
        removed = workspaces.sweep()

        # Then only the dead one went
        assert removed == [dead]
        assert live.exists()
        assert sorted(p.name for p in Path(settings.PUBLISHING_WORKSPACE_DIR).iterdir()) == [live.name]


def test_a_workspace_folder_owned_by_someone_else_is_refused(settings, tmp_path):
    # Given a workspace root another user made first (as anyone can in a shared /tmp)
    root = tmp_path / "theirs"
    root.mkdir()
    require_root("chown to another user needs root")
    os.chown(root, 65534, 65534)
    settings.PUBLISHING_WORKSPACE_DIR = str(root)

    # When / Then no attempt gets a workspace there
    with pytest.raises(PermanentJobError) as excinfo, workspaces.workspace():
        pass
    assert excinfo.value.code == "WORKSPACE_INVALID"


@pytest.mark.parametrize(
    ("policy", "bwrap", "level", "says"),
    [
        (SandboxPolicy(mode="required"), None, logging.ERROR, "Builds REFUSED"),
        (SandboxPolicy(mode="auto"), None, logging.WARNING, "WITHOUT a sandbox: bwrap is not installed"),
        (SandboxPolicy(mode="off"), "/usr/bin/bwrap", logging.WARNING, "PUBLISHING_BUILD_SANDBOX=off"),
        (SandboxPolicy(mode="auto", network="public"), "/usr/bin/bwrap", logging.INFO, "network public"),
    ],
)
def test_the_worker_says_at_start_how_it_builds(monkeypatch, policy, bwrap, level, says):
    monkeypatch.setattr("shutil.which", lambda name: bwrap if name == "bwrap" else None)
    found_level, line = describe(policy)
    assert found_level == level
    assert says in line


def test_required_without_bwrap_fails_every_build_with_a_clear_code(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(PermanentJobError) as excinfo:
        SandboxPolicy(mode="required").bwrap()
    assert excinfo.value.code == "SANDBOX_UNAVAILABLE"
    assert "bwrap is not installed" in excinfo.value.detail


def test_a_workspace_is_removed_however_deep_its_build_nested_folders(settings, tmp_path):
    # Given a build that nested 3,000 folders (shutil.rmtree alone hits RecursionError)
    settings.PUBLISHING_WORKSPACE_DIR = str(tmp_path / "workspaces")
    with workspaces.workspace() as folder:
        fd = os.open(folder, os.O_RDONLY)
        for _ in range(3000):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(fd)

    # Then it is gone all the same
    assert not folder.exists()
    assert list(Path(settings.PUBLISHING_WORKSPACE_DIR).iterdir()) == []


def test_an_existing_workspace_folder_is_used_as_it_is(settings, tmp_path):
    # Given a folder the operator made, open to others (a shared /tmp would be 1777)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    settings.PUBLISHING_WORKSPACE_DIR = str(shared)

    # When an attempt takes a workspace there
    with workspaces.workspace() as folder:
        assert folder.parent == shared

    # Then the folder's own mode is left alone, and new parents are passable (0711)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    settings.PUBLISHING_WORKSPACE_DIR = str(tmp_path / "new" / "deeper")
    with workspaces.workspace():
        pass
    assert [stat.S_IMODE((tmp_path / p).stat().st_mode) for p in ("new", "new/deeper")] == [0o711, 0o711]
