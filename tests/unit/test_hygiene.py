"""Process hygiene: what the service's processes write is their user's only, and their memory too."""

from __future__ import annotations

import grp
import hashlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError
from publishing.hygiene import private_state
from publishing.pipeline.base import Artifact, Origin
from publishing.pipeline.stores.file import FileStore
from tests.support.polling import wait_until
from tests.support.prerequisites import require_root

PR_GET_DUMPABLE = 3
REPORT_DUMPABLE = f"import ctypes; print(ctypes.CDLL(None).prctl({PR_GET_DUMPABLE}, 0, 0, 0, 0))"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_state_closes_var_dir_and_the_database_with_its_journals(tmp_path):
    # Given a state folder and an SQLite database with its journals, as an older version left them
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    var.chmod(0o755)
    files = [var / name for name in ("db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm")]
    for path in files:
        path.write_text("x")
        path.chmod(0o644)

    # When
    private_state(var, [var / "db.sqlite3"])

    # Then nobody but their owner may read them
    assert _mode(var) == 0o700
    assert [_mode(path) for path in files] == [0o600, 0o600, 0o600]


def _store(tmp_path: Path, store: Path, *, group: str) -> Path:
    """Submit a small artifact of publishing p-1 of project `site` to `store`; the archive's path."""
    artifact = tmp_path / "a.tar.gz"
    artifact.write_bytes(b"archive")
    submission = FileStore(roots=[str(store)], group=group).submit(
        Artifact(path=artifact, sha256=hashlib.sha256(b"archive").hexdigest(), size=7),
        target_url=f"file://{store}",
        publishing_id="p-1",
        origin=Origin(owner_id="7", project_id="p", project_slug="site"),
    )
    return Path(submission.uri.removeprefix("file://"))


@pytest.mark.parametrize("group", ["", "0"], ids=["owner only", "with a group"])
def test_the_file_store_is_its_owners_or_one_groups_only(tmp_path, group: str):
    if group:
        require_root("giving a file to group 0 needs root")
    # Given a store, as a worker with umask 022 would otherwise leave it readable by all
    old = os.umask(0o022)
    try:
        # When an artifact is submitted
        archive = _store(tmp_path, tmp_path / "store", group=group)
    finally:
        os.umask(old)

    # Then its folder and files are closed to others (and open to the group when one is named)
    folder = tmp_path / "store" / "7" / "site"
    modes = [_mode(folder), _mode(archive), _mode(folder / "p-1.json")]
    assert modes == ([0o700, 0o600, 0o600] if not group else [0o750, 0o640, 0o640])
    if group:
        assert archive.stat().st_gid == grp.getgrgid(0).gr_gid


def test_a_store_group_that_does_not_exist_is_a_clear_error(tmp_path):
    with pytest.raises(PermanentJobError) as excinfo:
        _store(tmp_path, tmp_path / "store", group="no-such-group-here")
    assert "PUBLISHING_STORE_GROUP" in excinfo.value.detail


def _python(*args: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        timeout=60,
    )
    return result.stdout


def test_a_plain_python_process_is_dumpable_so_the_checks_below_can_fail():
    assert _python("-c", REPORT_DUMPABLE).strip() == "1"


def test_every_django_process_is_non_dumpable_with_umask_077():
    # When a process sets Django up (web workers, Dramatiq workers, management commands)
    script = "import django, os; django.setup(); " + REPORT_DUMPABLE.replace(
        "print(", "print(os.umask(0o022), "
    )
    answer = _python("-c", script, DJANGO_SETTINGS_MODULE="publisher_project.settings.test")

    # Then
    assert answer.split() == [str(0o077), "0"]


def test_the_gunicorn_master_hook_makes_it_non_dumpable():
    script = "from publisher_project.gunicorn import on_starting; on_starting(None); " + REPORT_DUMPABLE
    assert _python("-c", script).strip() == "0"


def test_the_dramatiq_master_is_non_dumpable_and_so_are_its_workers_and_forks(tmp_path):
    # Given a broker module that every worker process imports, and a fork function (as the metrics
    # exposition server is one), each writing down whether its process is dumpable
    reports = tmp_path / "reports"
    reports.mkdir()
    (tmp_path / "probe.py").write_text(
        "import ctypes, os, pathlib\n"
        "import dramatiq\n"
        "from dramatiq.brokers.stub import StubBroker\n"
        "broker = StubBroker()\n"
        "dramatiq.set_broker(broker)\n"
        "def write(kind):\n"
        f"    dumpable = ctypes.CDLL(None).prctl({PR_GET_DUMPABLE}, 0, 0, 0, 0)\n"
        f"    pathlib.Path({str(reports)!r}, f'{{kind}}-{{os.getpid()}}').write_text(str(dumpable))\n"
        "write('imported')\n"
        "def report():\n"
        "    write('fork')\n"
        "    return 0\n"
    )

    # When the Dramatiq command line runs through publishing.worker_master, until both reported
    master = subprocess.Popen(
        [sys.executable, "-m", "publishing.worker_master", "--processes", "1", "--threads", "1",
         "--path", str(tmp_path), "--fork-function", "probe:report", "probe:broker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(
            lambda: list(reports.glob("fork-*")) and len(list(reports.glob("imported-*"))) >= 2,
            30,
            lambda: (
                f"the worker and its fork never both reported: {sorted(p.name for p in reports.iterdir())}"
            ),
        )
    finally:
        master.send_signal(signal.SIGTERM)
        master.wait(30)

    # Then the worker process and the fork (both forked from the master) are non-dumpable
    found = sorted((path.name.split("-")[0], path.read_text()) for path in reports.iterdir())
    assert found.count(("fork", "0")) >= 1
    assert found.count(("imported", "0")) >= 2  # the fork's import of probe, and the worker's
    assert {dumpable for _, dumpable in found} == {"0"}


def test_rundramatiq_execs_dramatiq_through_the_worker_master(monkeypatch, settings):
    # Given an exec that records instead of replacing the test process
    calls: list[tuple[str, list[str]]] = []

    def record(file: str, args: Any) -> None:
        calls.append((file, list(args)))

    monkeypatch.setattr(os, "execvp", record)
    # rundramatiq writes the metrics variables into this process's environment, for the exec.
    monkeypatch.setattr(os, "environ", os.environ.copy())
    from django.core.management import call_command

    # When
    call_command("rundramatiq", "--processes", "1", "--threads", "2")

    # Then Dramatiq's own arguments went to `python -m publishing.worker_master`, and exec is restored
    [(file, args)] = calls
    assert file == sys.executable
    assert args[:3] == [sys.executable, "-m", "publishing.worker_master"]
    assert args[3:5] == ["--path", "."]
    assert args[args.index("--processes") + 1] == "1"
    assert args[args.index("--threads") + 1] == "2"
    assert "publishing.tasks" in args
    assert os.execvp is record


def test_store_folders_it_creates_above_the_project_let_the_group_through(tmp_path):
    require_root("giving a folder to group 0 needs root")
    _store(tmp_path, tmp_path / "new" / "store", group="0")
    folders = ("new", "new/store", "new/store/7", "new/store/7/site")
    assert [_mode(tmp_path / p) for p in folders] == [0o750] * 4


def test_dramatiqs_reload_execs_the_worker_master_again(monkeypatch):
    # Given the master's exec as Dramatiq calls it on SIGHUP or --watch: its own command line,
    # whose first element is publishing/worker_master.py (no program)
    from publishing import worker_master

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda file, args: calls.append((file, list(args))))

    # When
    worker_master._reexec(
        worker_master.__file__, [worker_master.__file__, "--processes", "2", "publishing.tasks"]
    )

    # Then it runs through the module again, hardened again
    assert calls == [
        (
            sys.executable,
            [sys.executable, "-m", "publishing.worker_master", "--processes", "2", "publishing.tasks"],
        )
    ]
