"""runlocal's record of its broker (VAR_DIR/runlocal.json): only a running runlocal's counts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from publisher_project.runlocal_record import (
    RunlocalRecord,
    current_record,
    process_start,
    remove_record,
    write_record,
)
from tests.support.polling import wait_until


@pytest.fixture
def runlocal_lookalike() -> Iterator[int]:
    """A live process whose command line names runlocal, as `manage.py runlocal`'s does."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "runlocal"])
    # Until it has exec'd, the child's command line is still pytest's.
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    wait_until(lambda: b"runlocal" in cmdline.read_bytes().split(b"\0"), 10)
    yield process.pid
    process.kill()
    process.wait()


def record_of(pid: int, broker_url: str = "redis://127.0.0.1:6400/0", port: int = 8000) -> RunlocalRecord:
    """The record runlocal `pid` writes: its broker and port, and its start time as the kernel tells it."""
    return RunlocalRecord(pid, broker_url, broker_url, port, process_start(pid))


def test_the_record_of_a_running_runlocal_is_read_back_whole(tmp_path: Path, runlocal_lookalike: int) -> None:
    record = record_of(runlocal_lookalike)
    write_record(tmp_path, record)

    assert current_record(tmp_path) == record
    assert [path.name for path in tmp_path.iterdir()] == ["runlocal.json"]


def test_a_record_whose_process_is_gone_or_is_no_runlocal_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass", "runlocal"])
    gone.wait()
    write_record(tmp_path, RunlocalRecord(gone.pid, "redis://127.0.0.1:6400/0", "", 8000, None))
    assert current_record(tmp_path) is None

    # A pid reused by another program after a crash
    write_record(tmp_path, record_of(os.getpid()))
    assert current_record(tmp_path) is None


def test_a_record_whose_process_started_at_another_time_is_stale(
    tmp_path: Path, runlocal_lookalike: int
) -> None:
    # Given a record of a runlocal that crashed, its pid now a new runlocal's (or anything naming runlocal)
    started = process_start(runlocal_lookalike)
    assert started is not None
    write_record(tmp_path, replace(record_of(runlocal_lookalike), started=started - 1))

    # When a command looks for the running runlocal, then it finds none
    assert current_record(tmp_path) is None


@pytest.mark.parametrize("writable_by", [0o020, 0o002], ids=["group", "others"])
def test_a_record_that_others_may_write_is_ignored(
    tmp_path: Path, runlocal_lookalike: int, writable_by: int
) -> None:
    # Given the record of a running runlocal that another user could have written
    write_record(tmp_path, record_of(runlocal_lookalike, broker_url="redis://attacker.example:6379/0"))
    (tmp_path / "runlocal.json").chmod(0o600 | writable_by)

    # When a command looks for the running runlocal, then it does not send its jobs there
    assert current_record(tmp_path) is None


def test_a_leftover_temporary_file_does_not_stop_the_record_being_written(
    tmp_path: Path, runlocal_lookalike: int
) -> None:
    # Given a temporary file left by a runlocal killed mid-write, with that pid (pids are reused)
    (tmp_path / f".runlocal.json.{runlocal_lookalike}").write_text("{half")

    # When a runlocal of that pid writes its record, then it is there whole and the leftover is gone
    write_record(tmp_path, record_of(runlocal_lookalike))
    assert current_record(tmp_path) == record_of(runlocal_lookalike)
    assert [path.name for path in tmp_path.iterdir()] == ["runlocal.json"]


def test_an_unreadable_record_is_none_and_only_its_owner_removes_it(
    tmp_path: Path, runlocal_lookalike: int
) -> None:
    (tmp_path / "runlocal.json").write_text("{not json")
    assert current_record(tmp_path) is None

    write_record(tmp_path, record_of(runlocal_lookalike))
    remove_record(tmp_path, runlocal_lookalike + 1)
    assert current_record(tmp_path) is not None
    remove_record(tmp_path, runlocal_lookalike)
    assert not (tmp_path / "runlocal.json").exists()


@pytest.mark.parametrize(
    ("broker_url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6400/0", "redis://***@127.0.0.1:6400/0"),
        ("redis://:s3cret@[::1]/0", "redis://***@[::1]/0"),
        ("redis://127.0.0.1:6400/0?password=s3cret", "redis://127.0.0.1:6400/0"),
    ],
)
def test_make_run_asks_first_and_hears_who_runs_without_a_password(
    tmp_path: Path, runlocal_lookalike: int, broker_url: str, shown: str
) -> None:
    # Given a runlocal running on a Redis with a password
    write_record(tmp_path, record_of(runlocal_lookalike, broker_url=broker_url, port=8123))

    # When `make run` asks before it starts anything
    asked = subprocess.run(
        [sys.executable, "-m", "publisher_project.runlocal_record", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip

    # Then it hears which one, and where, and stops
    assert asked.returncode == 1
    assert f"runlocal already runs (pid {runlocal_lookalike}) on http://127.0.0.1:8123/" in asked.stderr
    assert f"with its broker at {shown}:" in asked.stderr
    assert "s3cret" not in asked.stderr
    assert (tmp_path / "runlocal.json").stat().st_mode & 0o777 == 0o600
