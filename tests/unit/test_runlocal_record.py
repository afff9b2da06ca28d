"""runlocal's record of its broker (VAR_DIR/runlocal.json): only a running runlocal's counts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from publisher_project.runlocal_record import RunlocalRecord, current_record, remove_record, write_record
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


def test_the_record_of_a_running_runlocal_is_read_back_whole(tmp_path: Path, runlocal_lookalike: int) -> None:
    record = RunlocalRecord(runlocal_lookalike, "redis://127.0.0.1:6400/0", "redis://127.0.0.1:6400/0", 8000)
    write_record(tmp_path, record)

    assert current_record(tmp_path) == record
    assert [path.name for path in tmp_path.iterdir()] == ["runlocal.json"]


def test_a_record_whose_process_is_gone_or_is_no_runlocal_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass", "runlocal"])
    gone.wait()
    write_record(
        tmp_path, RunlocalRecord(gone.pid, "redis://127.0.0.1:6400/0", "redis://127.0.0.1:6400/0", 8000)
    )
    assert current_record(tmp_path) is None

    # A pid reused by another program after a crash
    write_record(tmp_path, RunlocalRecord(os.getpid(), "redis://x/0", "redis://x/0", 8000))
    assert current_record(tmp_path) is None


def test_an_unreadable_record_is_none_and_only_its_owner_removes_it(
    tmp_path: Path, runlocal_lookalike: int
) -> None:
    (tmp_path / "runlocal.json").write_text("{not json")
    assert current_record(tmp_path) is None

    write_record(tmp_path, RunlocalRecord(runlocal_lookalike, "redis://x/0", "redis://x/0", 8000))
    remove_record(tmp_path, runlocal_lookalike + 1)
    assert current_record(tmp_path) is not None
    remove_record(tmp_path, runlocal_lookalike)
    assert not (tmp_path / "runlocal.json").exists()


def test_make_run_asks_first_and_hears_who_runs_without_a_password(
    tmp_path: Path, runlocal_lookalike: int
) -> None:
    # Given a runlocal running on a Redis with a password
    write_record(tmp_path, RunlocalRecord(runlocal_lookalike, "redis://:s3cret@127.0.0.1:6400/0", "", 8123))

    # When `make run` asks before it starts anything
    asked = subprocess.run(
        [sys.executable, "-m", "publisher_project.runlocal_record", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip

    # Then it hears which one, and where, and stops
    assert asked.returncode == 1
    assert f"runlocal already runs (pid {runlocal_lookalike}) on http://127.0.0.1:8123/" in asked.stderr
    assert "redis://***@127.0.0.1:6400/0" in asked.stderr
    assert "s3cret" not in asked.stderr
    assert (tmp_path / "runlocal.json").stat().st_mode & 0o777 == 0o600
