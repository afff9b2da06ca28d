"""Build step: output capture and cap, failures, timeouts, cancellation and the scrubbed environment."""

from __future__ import annotations

import ctypes
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError
from publishing.pipeline.build import MAX_FILE_SIZE, TRUNCATION_MARKER, build_environment, run_build


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    path.mkdir()
    return path


class Output:
    """Collects on_output chunks and remembers which thread delivered them."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.threads: set[int] = set()

    def __call__(self, text: str) -> None:
        self.chunks.append(text)
        self.threads.add(threading.get_ident())

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def _run(command: str, cwd: Path, output: Output | None = None, **overrides: Any) -> None:
    options: dict[str, Any] = {"timeout": 30, "output_limit": 64 * 1024, **overrides}
    run_build(command, cwd=cwd, on_output=output if output is not None else Output(), **options)


def _alive(pid: int) -> bool:
    """True while `pid` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _wait_for_file(path: Path, lines: int, within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            found = [int(line) for line in path.read_text().split()]
            if len(found) >= lines:
                return found
        time.sleep(0.05)
    raise AssertionError(f"{path} did not get {lines} pids")


def test_run_build_streams_stdout_and_stderr_to_on_output_in_the_calling_thread(source):
    # Given a command writing to both streams
    output = Output()

    # When
    _run("sh -c 'echo hello; echo oops >&2; echo bye'", source, output)

    # Then
    assert output.text == "hello\noops\nbye\n"
    assert output.threads == {threading.get_ident()}


def test_run_build_runs_in_the_checkout(source):
    # Given a file in the checkout
    (source / "marker.txt").write_text("here")
    output = Output()

    # When
    _run("cat marker.txt", source, output)

    # Then
    assert output.text == "here"


def test_run_build_reports_a_non_zero_exit_as_build_failed(source):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _run("sh -c 'echo failing; exit 3'", source)
    assert excinfo.value.code == "BUILD_FAILED"
    assert excinfo.value.detail == "build command exited with status 3"


def test_run_build_names_the_signal_that_killed_the_command(source):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _run("sh -c 'kill -TERM $$'", source)
    assert excinfo.value.code == "BUILD_FAILED"
    assert "SIGTERM" in excinfo.value.detail


def test_run_build_timeout_kills_the_whole_process_group(source):
    # Given a command with a background grandchild, both recording their pids
    command = "sh -c 'sleep 60 & echo $! > pids; echo $$ >> pids; echo started; wait'"
    output = Output()
    started = time.monotonic()

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _run(command, source, output, timeout=1)

    # Then the step fails in time, with the output so far, and nothing it started survives
    assert excinfo.value.code == "BUILD_TIMEOUT"
    assert excinfo.value.detail == "build exceeded 1 s"
    assert time.monotonic() - started < 10
    assert "started" in output.text
    pids = _wait_for_file(source / "pids", 2)
    assert _wait_gone(pids)


def test_run_build_kills_background_processes_left_by_a_successful_command(source):
    # Given a command that exits while its background child keeps the output pipe open
    command = "sh -c 'sleep 60 & echo $! > pids; echo done'"
    started = time.monotonic()

    # When
    _run(command, source)

    # Then the step returns at once and the straggler is gone
    assert time.monotonic() - started < 10
    assert _wait_gone(_wait_for_file(source / "pids", 1))


def test_run_build_caps_output_and_marks_the_truncation_once(source):
    # Given a command writing far more than the cap (and more than a pipe buffer)
    command = shlex.join([sys.executable, "-c", "import sys; sys.stdout.write('a' * 300_000)"])
    output = Output()

    # When
    _run(command, source, output, output_limit=1000)

    # Then the command was drained to the end and only the cap was delivered
    assert output.text == "a" * 1000 + TRUNCATION_MARKER


def test_run_build_does_not_mark_output_exactly_at_the_cap(source):
    # Given a command writing exactly the cap
    command = shlex.join([sys.executable, "-c", "import sys; sys.stdout.write('b' * 1000)"])
    output = Output()

    # When
    _run(command, source, output, output_limit=1000)

    # Then
    assert output.text == "b" * 1000


def test_run_build_decodes_invalid_utf8_with_replacement_characters(source):
    # Given a command writing bytes that are not UTF-8
    command = shlex.join([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end')"])
    output = Output()

    # When
    _run(command, source, output)

    # Then
    assert output.text == "ok \ufffd\ufffd end"


def test_run_build_environment_carries_no_worker_secrets(source, monkeypatch):
    # Given secrets in the worker's environment
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BROKER_URL", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "leaked")
    output = Output()

    # When
    _run("env", source, output)

    # Then the build saw only its own variables
    env = dict(line.split("=", 1) for line in output.text.splitlines())
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG", "CI"}
    assert "leaked" not in output.text
    assert env["HOME"] == str(source.parent / "home")
    assert Path(env["TMPDIR"]).is_relative_to(source.parent / "home")
    assert env["CI"] == "true"
    assert env["LANG"] == "C.UTF-8"


def test_build_environment_creates_home_and_tmpdir_beside_the_checkout(source):
    # When
    env = build_environment(source)

    # Then
    assert Path(env["HOME"]).is_dir()
    assert Path(env["TMPDIR"]).is_dir()
    assert not Path(env["HOME"]).is_relative_to(source)


def test_run_build_limits_core_dumps_and_file_size(source):
    # Given a command printing its own limits
    script = "import resource as r; print(r.getrlimit(r.RLIMIT_CORE)[0], r.getrlimit(r.RLIMIT_FSIZE)[0])"
    output = Output()

    # When
    _run(shlex.join([sys.executable, "-c", script]), source, output)

    # Then
    core, fsize = (int(value) for value in output.text.split())
    assert core == 0
    assert 0 < fsize <= MAX_FILE_SIZE


@pytest.mark.parametrize(
    "command", ["no-such-build-tool --prod", "./missing.sh", "", "   ", "echo 'unterminated"]
)
def test_run_build_refuses_a_command_that_cannot_be_run(source, command):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _run(command, source)
    assert excinfo.value.code == "BUILD_COMMAND_INVALID"


def test_run_build_kills_the_build_when_on_output_raises(source):
    # Given a log sink that fails on the first chunk
    class LogFailure(Exception):
        pass

    def on_output(text: str) -> None:
        raise LogFailure

    started = time.monotonic()

    # When / Then the error propagates at once and the build is gone
    with pytest.raises(LogFailure):
        run_build(
            "sh -c 'echo $$ > pids; echo started; sleep 60'",
            cwd=source,
            timeout=30,
            output_limit=1024,
            on_output=on_output,
        )
    assert time.monotonic() - started < 10
    assert _wait_gone(_wait_for_file(source / "pids", 1))


def test_run_build_kills_the_process_group_on_an_asynchronous_exception(source):
    # Given a build running in a worker thread
    class Cancelled(Exception):
        pass

    errors: list[BaseException] = []

    def target() -> None:
        try:
            _run("sh -c 'sleep 60 & echo $! > pids; echo $$ >> pids; wait'", source)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    pids = _wait_for_file(source / "pids", 2)

    # When the thread is cancelled the way Dramatiq aborts and times out actors
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Cancelled))
    thread.join(10)

    # Then the exception surfaced and every process of the build is gone
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], Cancelled)
    assert _wait_gone(pids)
