"""Build step: output capture and cap, failures, timeouts, cancellation, the scrubbed environment,
the build user and the resource limits (each tiny here, so that a runaway build ends in seconds)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import random
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError
from publishing.pipeline.base import Job, Origin
from publishing.pipeline.build import build_environment, run_build
from publishing.pipeline.build_limits import BuildLimits, BuildOutcome, classify_build, count_tasks
from publishing.pipeline.processes import TRUNCATION_MARKER
from publishing.pipeline.workspace import workspace
from tests.support.polling import wait_until, wait_while

NOBODY = pwd.getpwnam("nobody")
# Tiny limits: each runaway build below ends within a few seconds.
TINY = BuildLimits(
    cpu_seconds=1,
    memory_bytes=200 * 1024**2,
    file_size_bytes=1024**2,
    processes=20,
    output_bytes=64 * 1024,
)
PR_SET_DUMPABLE = 4
needs_root = pytest.mark.needs_root("switching to a build user needs root")


@pytest.fixture
def source(sandbox_required: None) -> Iterator[Path]:
    """A checkout in a workspace of the product's own (pytest's tmp_path is closed to build uids),
    built in the sandbox (the default); the unsandboxed path has the `unsandboxed` fixture."""
    with workspace() as folder:
        (folder / "source").mkdir()
        yield folder / "source"


@pytest.fixture
def unsandboxed_source(settings: Any) -> Iterator[Path]:
    """A checkout in a workspace of the product's own, built outside the sandbox as the worker's user."""
    settings.PUBLISHING_BUILD_SANDBOX = "off"
    settings.PUBLISHING_BUILD_USER = "worker"
    with workspace() as folder:
        (folder / "source").mkdir()
        yield folder / "source"


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


def _wait_gone(pids: list[int], within: float = 15.0) -> bool:
    wait_while(lambda: [pid for pid in pids if _alive(pid)], within, lambda: f"still alive: {pids}")
    return True


def _processes_of(uid: int) -> list[str]:
    """The processes (but zombies) of real uid `uid`: a sandboxed build's pids are its own."""
    alive = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
            if f"\nUid:\t{uid}\t" in status and "State:\tZ" not in status:
                alive.append(entry.name)
    return alive


def _uid_gone(uid: int, within: float = 15.0) -> bool:
    """True once no process (but zombies) of real uid `uid` runs; AssertionError naming them if some do."""
    wait_while(lambda: _processes_of(uid), within, lambda: f"uid {uid} still runs {_processes_of(uid)}")
    return True


def _idle_uid() -> int:
    """A uid of no account that runs nothing now, picked at random far above the sandbox's build uids."""
    accounts = {entry.pw_uid for entry in pwd.getpwall()}
    while True:
        uid = random.randrange(2_000_000, 3_000_000)  # noqa: S311 - spreading, not secrecy
        if uid not in accounts and count_tasks(uid) == 0:
            return uid


def _wait_for_file(path: Path, lines: int, within: float = 15.0) -> list[int]:
    def found() -> list[int]:
        numbers = [int(line) for line in path.read_text().split()] if path.exists() else []
        return numbers if len(numbers) >= lines else []

    return wait_until(found, within, f"{path} did not get {lines} pids")


def test_run_build_streams_stdout_and_stderr_to_on_output_in_the_calling_thread(source):
    # Given a command writing to both streams
    output = Output()

    # When
    _run("sh -c 'echo hello; echo oops >&2; echo bye'", source, output)

    # Then
    assert output.text == "hello\noops\nbye\n"
    assert output.threads == {threading.get_ident()}


# A build writing to its two streams in turn, many times over, without pausing: one pipe carries both.
ALTERNATING = """\
import sys
for number in range(300):
    print(f"out {number}")
    sys.stderr.write(f"err {number}\\n")
"""


@pytest.mark.parametrize("where", ["source", "unsandboxed_source"], ids=["sandboxed", "unsandboxed"])
def test_run_build_delivers_a_python_builds_stdout_and_stderr_in_the_order_written(where, request):
    # Given a checkout built in the sandbox, or outside it
    cwd = request.getfixturevalue(where)
    output = Output()

    # When a Python build alternates print() and sys.stderr.write() lines
    _run(_python(ALTERNATING), cwd, output)

    # Then its lines arrive as it wrote them, not its stdout's block at the end
    assert output.text == "".join(f"out {number}\nerr {number}\n" for number in range(300))


@pytest.mark.parametrize("where", ["source", "unsandboxed_source"], ids=["sandboxed", "unsandboxed"])
def test_the_build_sees_the_commit_it_builds_and_which_attempt_it_is(where, request):
    # Given a job of its second attempt, at a known commit
    cwd = request.getfixturevalue(where)
    job = Job(
        publishing_id="p",
        origin=Origin(owner_id="1", project_id="p", project_slug="site"),
        repository_url="/nowhere",
        ref="main",
        build_command="",
        artifact_path=".",
        target_url="",
        workspace=cwd.parent,
        log=lambda text: None,
        commit="ab" * 20,
        attempt=2,
    )
    output = Output()

    # When its build prints them
    _run(
        _python('import os; print(os.environ["PUBLISHER_COMMIT"], os.environ["PUBLISHER_ATTEMPT"])'),
        cwd,
        output,
        variables=job.build_variables(),
    )

    # Then they are in its environment
    assert output.text == f"{'ab' * 20} 2\n"


def test_run_build_runs_in_the_checkout(source):
    # Given a file in the checkout
    (source / "marker.txt").write_text("here")
    output = Output()

    # When
    _run("cat marker.txt", source, output)

    # Then
    assert output.text == "here"


def test_run_build_reports_a_non_zero_exit_as_build_failed_with_its_last_output(source):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _run("sh -c 'echo failing; exit 3'", source)
    assert excinfo.value.code == "BUILD_FAILED"
    assert excinfo.value.detail == "build command exited with status 3: failing"


def test_a_failed_builds_detail_ends_with_its_last_ten_output_lines_without_credentials(source):
    # Given a build that writes 30 lines to either stream, blank lines and a URL with a token among
    # them, then fails
    script = """
import sys
for number in range(30):
    (sys.stderr if number % 2 else sys.stdout).write(f"step {number}\\n\\n")
print("pushing to https://deploy:t0ken@git.example.com/site.git")
sys.exit("error: \\x1b[31mno index.html\\x1b[0m")
"""

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _run(_python(script), source)

    # Then the cause is next to the status: its last ten non-empty lines, in order, on one line
    assert excinfo.value.code == "BUILD_FAILED"
    assert excinfo.value.detail == (
        "build command exited with status 1: "
        + " | ".join(f"step {number}" for number in range(22, 30))
        + " | pushing to https://***@git.example.com/site.git | error: no index.html"
    )


def test_a_build_stopped_at_a_limit_says_so_then_shows_its_last_output(source):
    # Given a build that ran out of memory, then one that ran out of time
    # When
    memory = _failure(_python("print('loading'); blob = bytearray(1 << 30)"), source, TINY)
    timeout = _failure(
        _python("import time; print('waiting', flush=True); time.sleep(60)"), source, TINY, timeout=1
    )

    # Then each names its limit first, then the lines that led to it
    assert memory.code == "BUILD_MEMORY_LIMIT"
    assert memory.detail.startswith("build ran out of memory (limit 200 MiB of address space; ")
    assert ": loading | Traceback (most recent call last): | " in memory.detail
    assert memory.detail.endswith(" | MemoryError")
    assert (timeout.code, timeout.detail) == ("BUILD_TIMEOUT", "build exceeded 1 s: waiting")


def test_run_build_names_the_signal_that_killed_the_command(source):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _run("sh -c 'kill -TERM $$'", source)
    assert excinfo.value.code == "BUILD_FAILED"
    assert "SIGTERM" in excinfo.value.detail


@needs_root  # a build's uid of its own: its processes are counted by uid
def test_run_build_timeout_kills_the_whole_process_group(source):
    # Given a command with a background grandchild, both recording their pids
    command = "sh -c 'sleep 60 & id -u > uid; echo started; wait'"
    output = Output()
    started = time.monotonic()

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _run(command, source, output, timeout=1)

    # Then the step fails in time, with the output so far, and nothing it started survives
    assert excinfo.value.code == "BUILD_TIMEOUT"
    assert excinfo.value.detail == "build exceeded 1 s: started"
    assert time.monotonic() - started < 30  # not the 60 s of the grandchild holding the pipe
    assert "started" in output.text
    [uid] = _wait_for_file(source / "uid", 1)
    assert uid != 0
    assert _uid_gone(uid)


@needs_root  # a build's uid of its own: its processes are counted by uid
def test_run_build_kills_background_processes_left_by_a_successful_command(source):
    # Given a command that exits while its background child keeps the output pipe open
    command = "sh -c 'setsid sleep 60 & id -u > uid; echo done'"
    started = time.monotonic()

    # When
    _run(command, source)

    # Then the step returns without waiting for the straggler (60 s), gone though it left the session
    assert time.monotonic() - started < 30
    assert _uid_gone(_wait_for_file(source / "uid", 1)[0])


def test_run_build_caps_output_and_marks_the_truncation_once(source):
    # Given a command writing far more than the cap (and more than a pipe buffer)
    command = shlex.join(["python3", "-c", "import sys; sys.stdout.write('a' * 300_000)"])
    output = Output()

    # When
    _run(command, source, output, output_limit=1000)

    # Then the command was drained to the end and only the cap was delivered
    assert output.text == "a" * 1000 + TRUNCATION_MARKER


def test_run_build_does_not_mark_output_exactly_at_the_cap(source):
    # Given a command writing exactly the cap
    command = shlex.join(["python3", "-c", "import sys; sys.stdout.write('b' * 1000)"])
    output = Output()

    # When
    _run(command, source, output, output_limit=1000)

    # Then
    assert output.text == "b" * 1000


def test_run_build_decodes_invalid_utf8_with_replacement_characters(source):
    # Given a command writing bytes that are not UTF-8
    command = shlex.join(["python3", "-c", "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end')"])
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
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG", "CI", "PYTHONUNBUFFERED", "PWD"}
    assert "leaked" not in output.text
    assert env["PWD"] == "/build/source"
    assert env["HOME"] == "/build/home"
    assert env["TMPDIR"] == "/tmp"
    assert env["CI"] == "true"
    assert env["LANG"] == "C.UTF-8"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_build_environment_creates_home_and_tmpdir_beside_the_checkout(source):
    # When
    env = build_environment(source)

    # Then
    assert Path(env["HOME"]).is_dir()
    assert Path(env["TMPDIR"]).is_dir()
    assert not Path(env["HOME"]).is_relative_to(source)


def test_run_build_sets_its_rlimits_from_the_settings(source, settings):
    # Given limits in the settings and a command printing its own
    settings.PUBLISHING_BUILD_CPU_LIMIT = 30
    settings.PUBLISHING_BUILD_MEMORY_LIMIT = 1024**3
    settings.PUBLISHING_BUILD_FILE_SIZE_LIMIT = 10 * 1024**2
    names = ["RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE"]
    script = f"import resource as r; print(*(r.getrlimit(getattr(r, n)) for n in {names!r}), sep='|')"
    output = Output()

    # When
    _run(shlex.join(["python3", "-c", script]), source, output)

    # Then the soft limits are the settings; a CPU hog that ignores SIGXCPU is killed a little later
    core, cpu, address_space, fsize = output.text.strip().split("|")
    assert core == "(0, 0)"
    assert cpu == "(30, 35)"
    assert address_space == f"({1024**3}, {1024**3})"
    assert fsize == f"({10 * 1024**2}, {10 * 1024**2})"


@pytest.mark.parametrize(
    "command", ["no-such-build-tool --prod", "./missing.sh", "", "   ", "echo 'unterminated"]
)
def test_run_build_refuses_a_command_that_cannot_be_run(source, command):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _run(command, source)
    assert excinfo.value.code == "BUILD_COMMAND_INVALID"


@pytest.mark.parametrize(
    ("command", "reason"),
    [("no-such-build-tool --prod", "No such file or directory"), ("./build.sh", "Permission denied")],
)
def test_run_build_names_a_command_it_cannot_execute(source, command, reason):
    # Given a build script that is not executable
    (source / "build.sh").write_text("#!/bin/sh\necho built\n")
    (source / "build.sh").chmod(0o644)
    output = Output()

    # When / Then the wrapper's report became the error; the log shows it too
    with pytest.raises(PermanentJobError) as excinfo:
        _run(command, source, output)
    assert excinfo.value.code == "BUILD_COMMAND_INVALID"
    name = shlex.split(command)[0]
    assert excinfo.value.detail == f"build command {name!r} cannot be executed: {reason}"
    assert output.text == f"publisher-build: cannot execute {name!r}: {reason}\n"


def test_run_build_reports_a_missing_tool_that_its_command_runs_as_a_failed_build(source):
    # Given a command that runs, then fails to run a tool (sh exits 127 too)
    # When / Then the build ran and failed: only a command that never ran is invalid
    with pytest.raises(PermanentJobError) as excinfo:
        _run("sh -c 'no-such-build-tool'", source)
    assert excinfo.value.code == "BUILD_FAILED"
    # (the shell's own words for it differ between shells)
    assert excinfo.value.detail.startswith("build command exited with status 127: sh: ")
    assert excinfo.value.detail.endswith("no-such-build-tool: not found")


def test_run_build_runs_no_python_between_fork_and_exec(source, monkeypatch):
    # Given a spy on Popen
    calls: list[tuple[list[str], dict[str, Any]]] = []
    popen = subprocess.Popen

    def spy(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        calls.append((args, kwargs))
        return popen(args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    output = Output()

    # When
    _run("echo built", source, output)

    # Then no preexec_fn: a fresh, isolated interpreter set the limits and became the command
    [(args, kwargs)] = calls
    assert kwargs.get("preexec_fn") is None
    assert Path(args[0]).name == "bwrap"
    wrapper = args.index("-I")
    assert args[wrapper : wrapper + 3] == ["-I", "-S", "-c"]
    assert args[-3:] == ["--", "echo", "built"]
    assert kwargs["start_new_session"] is True
    assert output.text == "built\n"


@needs_root  # a build's uid of its own: its processes are counted by uid
def test_run_build_kills_the_build_when_on_output_raises(source):
    # Given a log sink that fails on the first chunk of output (not on a silent poll's tick)
    class LogFailure(Exception):
        pass

    def on_output(text: str) -> None:
        if text:
            raise LogFailure

    started = time.monotonic()

    # When / Then the error propagates at once and the build is gone
    with pytest.raises(LogFailure):
        run_build(
            "sh -c 'id -u > uid; echo started; sleep 60'",
            cwd=source,
            timeout=30,
            output_limit=1024,
            on_output=on_output,
        )
    assert time.monotonic() - started < 30  # not the build's 60 s
    assert _uid_gone(_wait_for_file(source / "uid", 1)[0])


@needs_root  # a build's uid of its own: its processes are counted by uid
def test_run_build_kills_the_process_group_on_an_asynchronous_exception(source):
    # Given a build running in a worker thread
    class Cancelled(Exception):
        pass

    errors: list[BaseException] = []

    def target() -> None:
        try:
            _run("sh -c 'sleep 60 & id -u > uid; wait'", source)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    [uid] = _wait_for_file(source / "uid", 1)

    # When the thread is cancelled the way Dramatiq aborts and times out actors
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Cancelled))
    thread.join(10)

    # Then the exception surfaced and every process of the build is gone
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], Cancelled)
    assert _uid_gone(uid)


# --- Resource limits -------------------------------------------------------------------------------


def _python(script: str) -> str:
    """A build command running `script` with the worker's own interpreter."""
    return shlex.join(["python3", "-c", textwrap.dedent(script)])


def _failure(command: str, cwd: Path, limits: BuildLimits, output: Output | None = None, **overrides: Any):
    with pytest.raises(PermanentJobError) as excinfo:
        _run(command, cwd, output, limits=limits, **overrides)
    return excinfo.value


def test_run_build_stops_an_endless_loop_at_the_cpu_limit(source):
    # Given a build that spins forever
    # When
    error = _failure(_python("while True: pass"), source, TINY, timeout=60)

    # Then SIGXCPU ended it after about a second of CPU time, not the wall-clock timeout (BUILD_TIMEOUT)
    assert error.code == "BUILD_CPU_LIMIT"
    assert "SIGXCPU" in error.detail


def test_run_build_reports_a_memory_hog_as_the_memory_limit(source):
    # Given a build that wants 1 GiB at once, within a 200 MiB address space
    output = Output()

    # When
    error = _failure(_python("blob = bytearray(1 << 30)"), source, TINY, output)

    # Then
    assert error.code == "BUILD_MEMORY_LIMIT"
    assert "MemoryError" in output.text


@pytest.mark.parametrize(
    "command",
    [
        # head gets SIGXFSZ (sh runs the last command in its own place)
        "sh -c 'head -c 2000000 /dev/zero > big'",
        # Python ignores SIGXFSZ: its write fails with EFBIG, "File too large"
        _python("open('big', 'wb').write(bytes(2_000_000))"),
    ],
    ids=["signal", "efbig"],
)
def test_run_build_stops_a_file_at_the_file_size_limit(source, command):
    # When
    error = _failure(command, source, TINY)

    # Then no byte past the limit was written
    assert error.code == "BUILD_FILE_LIMIT"
    assert (source / "big").stat().st_size <= TINY.file_size_bytes


def test_run_build_stops_a_build_that_writes_too_much_output(source):
    # Given a build writing without end, far more than its 64 KiB of output
    output = Output()

    # When
    error = _failure(
        _python("import os\nwhile True: os.write(1, b'x' * 65536)"), source, TINY, output, output_limit=1000
    )

    # Then it was stopped by its output (not at the timeout, BUILD_TIMEOUT), and the log got only its cap
    assert error.code == "BUILD_OUTPUT_LIMIT"
    assert output.text == "x" * 1000 + TRUNCATION_MARKER


def test_run_build_lets_output_up_to_the_limit_through(source):
    # Given a build writing exactly its output limit
    output = Output()

    # When
    _run(_python("import sys; sys.stdout.write('y' * 65536)"), source, output, limits=TINY, output_limit=10)

    # Then
    assert output.text == "y" * 10 + TRUNCATION_MARKER


# --- The build user (a root worker) ---------------------------------------------------------------


@pytest.fixture
def unsandboxed(settings: Any) -> None:
    """Builds outside the sandbox: where bwrap is missing and PUBLISHING_BUILD_SANDBOX is not required."""
    settings.PUBLISHING_BUILD_SANDBOX = "off"


@pytest.fixture
def reachable(builds_as_nobody: None, unsandboxed: None) -> Iterator[Path]:
    """A checkout in a workspace under /tmp that the build user can reach (pytest's tmp_path is 0700),
    while no other test builds as nobody; unsandboxed, where PUBLISHING_BUILD_USER runs builds."""
    workspace = Path(tempfile.mkdtemp(prefix="publisher-build-test-"))
    (workspace / "source").mkdir()
    yield workspace / "source"
    shutil.rmtree(workspace, ignore_errors=True)


AS_NOBODY = BuildLimits(
    cpu_seconds=TINY.cpu_seconds,
    memory_bytes=TINY.memory_bytes,
    file_size_bytes=TINY.file_size_bytes,
    processes=TINY.processes,
    output_bytes=TINY.output_bytes,
    user="nobody",
)

# A fork bomb that cannot outlive its test: every process forks until fork fails, records its pid,
# and gives up after 4 s whatever happens. RLIMIT_NPROC keeps it to 20 tasks.
FORK_BOMB = """\
import os, time
end = time.monotonic() + 4
while time.monotonic() < end:
    try:
        if os.fork() == 0:
            with open("pids", "a") as fh:
                fh.write(f"{os.getpid()}\\n")
    except OSError:
        time.sleep(0.01)
"""


@needs_root
def test_run_build_runs_as_the_build_user_in_a_checkout_it_owns(reachable):
    # Given a file from the checkout, and a command that writes in the checkout and its HOME
    (reachable / "site.txt").write_text("site")
    output = Output()

    # When
    _run(
        "sh -c 'id -u; id -G; cat site.txt > copy.txt; touch \"$HOME/cache\"'",
        reachable,
        output,
        limits=AS_NOBODY,
    )

    # Then it ran as nobody with nobody's group only; the workspace is only searchable by it
    uid, groups = output.text.split()
    assert int(uid) == NOBODY.pw_uid
    assert groups == str(NOBODY.pw_gid)
    assert (reachable / "copy.txt").stat().st_uid == NOBODY.pw_uid
    assert (reachable.parent / "home" / "cache").exists()
    assert stat.S_IMODE(reachable.parent.stat().st_mode) == 0o711


@needs_root
def test_run_build_as_the_build_user_gets_its_rlimits(reachable):
    # Given a build as nobody printing its uid and its limits
    names = ["RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC"]
    limits = f"(r.getrlimit(getattr(r, n)) for n in {names!r})"
    script = f"import os, resource as r; print(os.getuid(), *{limits}, sep='|')"
    output = Output()

    # When
    _run(shlex.join(["python3", "-c", script]), reachable, output, limits=AS_NOBODY)

    # Then the limits were set after the switch to nobody, the process limit included
    uid, core, cpu, address_space, fsize, nproc = output.text.strip().split("|")
    assert int(uid) == NOBODY.pw_uid
    assert core == "(0, 0)"
    assert cpu == "(1, 6)"
    assert address_space == f"({TINY.memory_bytes}, {TINY.memory_bytes})"
    assert fsize == f"({TINY.file_size_bytes}, {TINY.file_size_bytes})"
    soft, hard = (int(value) for value in nproc.strip("()").split(", "))
    assert soft == hard >= AS_NOBODY.processes


@needs_root
def test_run_build_refuses_a_build_user_that_cannot_run_python(reachable, monkeypatch, tmp_path):
    # Given an interpreter only root may reach, and no python3 on PATH
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "python3").write_text("#!/bin/sh\n")
    (private / "python3").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(private / "python3"))
    monkeypatch.setenv("PATH", str(private))

    # When / Then nothing runs: without the wrapper the build would have no limits
    error = _failure("touch started", reachable, AS_NOBODY)
    assert error.code == "BUILD_USER_INVALID"
    assert not (reachable / "started").exists()


@needs_root
def test_run_build_stops_a_fork_bomb_at_the_process_limit(reachable):
    # Given a fork bomb run as nobody, with 20 tasks of allowance and a 30 s timeout
    # When
    error = _failure(shlex.join(["python3", "-c", FORK_BOMB]), reachable, AS_NOBODY, timeout=30)

    # Then it was found at its limit and stopped (not at the timeout, BUILD_TIMEOUT), and none of its
    # processes survive
    assert error.code == "BUILD_PROCESS_LIMIT"
    pids = [int(line) for line in (reachable / "pids").read_text().split()]
    assert 0 < len(pids) <= AS_NOBODY.processes
    assert _wait_gone(pids)


@needs_root
def test_run_build_as_the_build_user_cannot_read_the_worker_environment(reachable, monkeypatch):
    # Given a secret in the worker's environment and a build that looks for it in /proc
    monkeypatch.setenv("SECRET_KEY", "leaked")
    script = "import os; print(open(f'/proc/{os.getppid()}/environ').read())"
    output = Output()

    # When
    error = _failure(shlex.join(["python3", "-c", script]), reachable, AS_NOBODY, output)

    # Then
    assert error.code == "BUILD_FAILED"
    assert "PermissionError" in output.text
    assert "leaked" not in output.text


@needs_root
def test_run_build_refuses_an_unknown_build_user(reachable):
    # When / Then
    error = _failure("true", reachable, BuildLimits(user="no-such-user-here"))
    assert error.code == "BUILD_USER_INVALID"


@needs_root
def test_a_root_worker_refuses_to_build_until_told_who_builds(reachable, caplog):
    # Given PUBLISHING_BUILD_USER unset on a root worker
    # When / Then nothing runs, and the error says how to choose
    error = _failure("touch started", reachable, BuildLimits(user=""))
    assert error.code == "BUILD_USER_INVALID"
    assert "PUBLISHING_BUILD_USER" in error.detail
    assert not (reachable / "started").exists()

    # When the operator says `worker`: the build runs as root, knowingly, with a warning
    with caplog.at_level(logging.WARNING):
        _run("touch started", reachable, None, limits=BuildLimits(user="worker"))
    assert (reachable / "started").exists()
    assert any("Builds run as root" in record.getMessage() for record in caplog.records)


@needs_root
def test_run_build_refuses_a_workspace_the_build_user_cannot_reach(tmp_path, unsandboxed):
    # Given a checkout below a folder only root may enter
    (tmp_path / "private").mkdir(mode=0o700)
    checkout = tmp_path / "private" / "workspace" / "source"
    checkout.mkdir(parents=True)

    # When / Then the build does not start
    error = _failure("touch started", checkout, AS_NOBODY)
    assert error.code == "BUILD_USER_INVALID"
    assert "private" in error.detail
    assert not (checkout / "started").exists()


# --- A non-root worker ------------------------------------------------------------------------------


def _in_unprivileged_worker(work: Callable[[], str], *, within: float = 20.0) -> str:
    """Run `work` in a forked child that dropped to nobody, as a non-root worker would; return its answer."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            # setuid() made this process non-dumpable; a worker started as nobody would not be.
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            os.write(write_end, work().encode())
            status = 0
        except BaseException as exc:
            os.write(write_end, f"crashed: {exc!r}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    deadline = time.monotonic() + within
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the unprivileged worker did not finish")
            time.sleep(0.05)
        with os.fdopen(read_end, "rb") as answer:
            return answer.read().decode()
    finally:
        with contextlib.suppress(OSError):
            os.close(read_end)


@pytest.fixture
def owned_by_nobody(reachable: Path) -> Path:
    for path in (reachable.parent, reachable):
        os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return reachable


def _code_of(command: str, cwd: Path, limits: BuildLimits) -> Callable[[], str]:
    def work() -> str:
        output = Output()
        try:
            run_build(command, cwd=cwd, timeout=5, output_limit=64 * 1024, on_output=output, limits=limits)
        except PermanentJobError as exc:
            return f"{exc.code}\n{output.text}"
        return f"ok\n{output.text}"

    return work


@needs_root
def test_a_non_root_worker_gives_its_build_a_process_allowance_over_its_own_tasks(owned_by_nobody):
    # Given a worker running as nobody, which may not switch users: its build runs as itself
    limits = BuildLimits(processes=20, output_bytes=64 * 1024)

    # When the build is a fork bomb
    answer = _in_unprivileged_worker(
        _code_of(shlex.join(["python3", "-c", FORK_BOMB]), owned_by_nobody, limits)
    )

    # Then RLIMIT_NPROC (its uid's tasks now, plus 20) held it and the step stopped it
    assert answer.split("\n")[0] == "BUILD_PROCESS_LIMIT", answer
    pids = [int(line) for line in (owned_by_nobody / "pids").read_text().split()]
    assert 0 < len(pids) <= limits.processes
    assert _wait_gone(pids)


@needs_root
def test_a_non_root_worker_hides_its_environment_from_its_build(owned_by_nobody):
    # Given a build of the worker's own uid reading the worker's /proc/<pid>/environ
    script = "import os; print(open(f'/proc/{os.getppid()}/environ').read())"
    limits = BuildLimits(output_bytes=64 * 1024)

    # When
    answer = _in_unprivileged_worker(_code_of(shlex.join(["python3", "-c", script]), owned_by_nobody, limits))

    # Then the worker made itself non-dumpable first, so /proc refuses
    code, _, text = answer.partition("\n")
    assert code == "BUILD_FAILED", answer
    assert "PermissionError" in text


@needs_root
def test_a_non_root_worker_cannot_switch_to_another_build_user(owned_by_nobody):
    # When
    answer = _in_unprivileged_worker(_code_of("true", owned_by_nobody, BuildLimits(user="root")))

    # Then
    assert answer.split("\n")[0] == "BUILD_USER_INVALID", answer


@needs_root
def test_count_tasks_counts_the_processes_and_threads_of_a_uid():
    # Given a uid that runs nothing (a random one of a high range, so that a run of this test elsewhere on
    # the host does not share it), then one process of it with three more threads
    uid = _idle_uid()
    assert count_tasks(uid) == 0
    script = (
        "import threading, time\nfor _ in range(3): threading.Thread(target=time.sleep, args=(10,)).start()"
    )
    process = subprocess.Popen(["python3", "-c", script], user=uid, group=uid, extra_groups=[], cwd="/")
    try:
        # When / Then
        wait_until(lambda: count_tasks(uid) >= 4, 15, lambda: f"{count_tasks(uid)} tasks")
        assert count_tasks(uid) == 4
    finally:
        process.kill()
        process.wait()


# --- Naming a failure --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (BuildOutcome(returncode=0, cpu_seconds=0.1, tail="done"), None),
        (BuildOutcome(returncode=2, cpu_seconds=0.1, tail="error: syntax"), "BUILD_FAILED"),
        (BuildOutcome(returncode=0, cpu_seconds=0.1, tail="", output_exceeded=True), "BUILD_OUTPUT_LIMIT"),
        (
            BuildOutcome(returncode=-9, cpu_seconds=0.1, tail="", process_limit_reached=True),
            "BUILD_PROCESS_LIMIT",
        ),
        (BuildOutcome(returncode=-9, cpu_seconds=0.1, tail="", timed_out=True), "BUILD_TIMEOUT"),
        (BuildOutcome(returncode=-signal.SIGXCPU, cpu_seconds=1.0, tail=""), "BUILD_CPU_LIMIT"),
        # It ignored SIGXCPU and was killed at the hard limit.
        (BuildOutcome(returncode=-signal.SIGKILL, cpu_seconds=6.0, tail=""), "BUILD_CPU_LIMIT"),
        # A SIGKILL from elsewhere, early.
        (BuildOutcome(returncode=-signal.SIGKILL, cpu_seconds=0.2, tail=""), "BUILD_FAILED"),
        # A shell reporting its child's death by SIGXCPU (128 + 24) or SIGXFSZ (128 + 25).
        (BuildOutcome(returncode=152, cpu_seconds=0.0, tail="CPU time limit exceeded"), "BUILD_CPU_LIMIT"),
        (BuildOutcome(returncode=153, cpu_seconds=0.0, tail=""), "BUILD_FILE_LIMIT"),
        (
            BuildOutcome(returncode=1, cpu_seconds=0.1, tail="OSError: [Errno 27] File too large"),
            "BUILD_FILE_LIMIT",
        ),
        (
            BuildOutcome(returncode=1, cpu_seconds=0.1, tail="Traceback ...\nMemoryError"),
            "BUILD_MEMORY_LIMIT",
        ),
        (
            BuildOutcome(returncode=134, cpu_seconds=0.1, tail="FATAL ERROR: JavaScript heap out of memory"),
            "BUILD_MEMORY_LIMIT",
        ),
        (
            BuildOutcome(returncode=2, cpu_seconds=0.1, tail="make: fork: Resource temporarily unavailable"),
            "BUILD_PROCESS_LIMIT",
        ),
        (
            BuildOutcome(returncode=1, cpu_seconds=0.1, tail="RuntimeError: can't start new thread"),
            "BUILD_PROCESS_LIMIT",
        ),
    ],
)
def test_classify_build_names_each_way_a_build_ends(outcome, code):
    # When
    error = classify_build(outcome, limits=TINY, timeout=5)

    # Then
    assert (error.code if error else None) == code


def test_classify_build_leaves_a_limit_that_is_off_out_of_it():
    # Given no memory limit, a build that ran out of memory simply failed
    outcome = BuildOutcome(returncode=1, cpu_seconds=0.1, tail="MemoryError")

    # When
    error = classify_build(outcome, limits=BuildLimits(), timeout=5)

    # Then
    assert error is not None
    assert error.code == "BUILD_FAILED"


def test_a_sandboxed_build_writes_only_its_checkout_home_and_bounded_temporary_folders(source):
    # Given a build that tries to write everywhere, and to fill its memory-backed folders
    script = """
import os
for path in ("/x", "/etc/x", "/build/x", "/run/x", "/usr/x", "/proc/x", "/build/source/x", "/build/home/x"):
    try:
        open(path, "w").close()
        print(path, "written")
    except OSError as exc:
        print(path, exc.strerror)
for folder in ("/tmp", "/dev/shm"):
    try:
        for number in range(4):
            with open(f"{folder}/part-{number}", "wb") as fh:
                fh.write(b"x" * 512 * 1024)
        print(folder, "2 MiB written")
    except OSError as exc:
        print(folder, exc.strerror)
"""
    output = Output()

    # When it runs with a 1 MiB file-size limit (which also bounds /tmp and /dev/shm)
    _run(shlex.join(["python3", "-c", script]), source, output, limits=BuildLimits(file_size_bytes=1024**2))

    # Then only its checkout and HOME took a file, and the temporary folders held no more than the limit
    assert output.text.splitlines() == [
        "/x Read-only file system",
        "/etc/x Read-only file system",
        "/build/x Read-only file system",
        "/run/x No such file or directory",
        "/usr/x Read-only file system",
        "/proc/x No such file or directory",
        "/build/source/x written",
        "/build/home/x written",
        "/tmp No space left on device",
        "/dev/shm No space left on device",
    ]
