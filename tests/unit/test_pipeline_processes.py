"""The one wait on a command in a process group of its own (the checkout's git, the build): output,
timeout, the caller's stop, cancellation by an asynchronous exception, and no process of the group left
afterwards by any of them."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, cast

import pytest

from publishing.pipeline.processes import (
    DETAIL_TAIL_CHARS,
    TAIL_BYTES,
    TRUNCATION_MARKER,
    Ending,
    RedactedLines,
    output_tail,
    supervise,
    with_output_tail,
)
from tests.support.polling import wait_until


def _start(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _supervise(proc: subprocess.Popen[bytes], out: list[str], **overrides: object) -> Ending:
    options: dict[str, object] = {"timeout": 30, "poll_interval": 0.05, "log_limit": 1 << 20}
    options.update(overrides)
    return supervise(proc, cast(IO[bytes], proc.stdout), on_output=out.append, **options)  # type: ignore[arg-type]


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed and not yet reaped by whoever adopted it, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _gone(pid: int) -> bool:
    wait_until(lambda: not _running(pid), 5, f"process {pid} still runs")
    return True


def _written(path: Path) -> bool:
    return path.exists() and path.read_text().endswith("\n")


def _background_pid(path: Path) -> int:
    wait_until(lambda: _written(path), 15, f"{path} never written")
    return int(path.read_text())


def test_the_output_reaches_the_caller_up_to_its_limit_and_the_exit_status_is_kept():
    # Given a command that prints 10 bytes and exits 3
    proc = _start("printf 0123456789; exit 3")
    out: list[str] = []

    # When it is waited for with a 4-byte limit on what is passed on
    ending = _supervise(proc, out, log_limit=4)

    # Then 4 bytes came, then the marker; the tail and the status are the command's
    assert "".join(out) == "0123" + TRUNCATION_MARKER
    assert ending.tail == "0123456789"
    assert (ending.returncode, ending.timed_out, ending.stopped) == (3, False, False)


def test_a_silent_command_still_gives_the_caller_a_tick_to_write_what_it_holds(tmp_path: Path):
    # Given a command that prints a line, then stays silent until told to go on
    flag = tmp_path / "go-on"
    proc = _start(f"echo started; while [ ! -e {flag} ]; do sleep 0.05; done; echo done")
    out: list[str] = []

    def on_output(text: str) -> None:
        # A tick ("") after the line, while the command is silent: what AttemptLog flushes on
        if text == "" and "started" in "".join(out):
            flag.touch()
        out.append(text)

    # When it is waited for (without ticks it would wait for the flag until its timeout)
    output = cast(IO[bytes], proc.stdout)
    ending = supervise(proc, output, timeout=20, poll_interval=0.05, on_output=on_output, log_limit=1 << 20)

    # Then the tick came while it was silent, and it ran to its end
    assert (ending.timed_out, ending.returncode) == (False, 0)
    assert "".join(out) == "started\ndone\n"


def test_a_timeout_kills_the_whole_group(tmp_path: Path):
    # Given a command that leaves a process in the background and waits
    proc = _start(f"sleep 60 & echo $! > {tmp_path / 'pid'}; wait")

    # When it outlives its timeout
    ending = _supervise(proc, [], timeout=1)

    # Then the wait says so and its background process is gone too
    assert ending.timed_out
    assert _gone(_background_pid(tmp_path / "pid"))


def test_the_callers_stop_kills_the_whole_group(tmp_path: Path):
    # Given a command that leaves a process in the background and waits
    proc = _start(f"sleep 60 & echo $! > {tmp_path / 'pid'}; wait")

    # When the caller's condition holds once the background process is there
    ending = _supervise(proc, [], should_stop=lambda at_deadline: _written(tmp_path / "pid"))

    # Then the wait stopped, not timed out, and nothing of the group runs on
    assert (ending.stopped, ending.timed_out) == (True, False)
    assert _gone(_background_pid(tmp_path / "pid"))


def test_an_asynchronous_exception_kills_the_whole_group_and_surfaces(tmp_path: Path):
    # Given a command that leaves a process in the background, waited for in a worker thread
    class Cancelled(Exception):
        pass

    class Output(list[str]):
        """What reached the caller; `waiting` is set from inside the wait, once the command said so."""

        waiting = threading.Event()

        def append(self, text: str) -> None:
            super().append(text)
            if "waiting" in "".join(self):
                self.waiting.set()

    proc = _start(f"sleep 60 & echo $! > {tmp_path / 'pid'}; echo waiting; wait")
    output = Output()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            _supervise(proc, output)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    background = _background_pid(tmp_path / "pid")
    assert Output.waiting.wait(30), "the wait never passed the command's output on"

    # When the thread is cancelled the way Dramatiq aborts and times out actors
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Cancelled))
    thread.join(30)

    # Then the exception surfaced, and neither the command nor what it left in the background runs on
    assert not thread.is_alive()
    assert [type(error) for error in errors] == [Cancelled]
    assert proc.returncode is not None
    assert _gone(background)


_SLEEP = time.sleep


def _no_sleep(seconds: float) -> None:
    """time.sleep for a test whose own thread must not sleep; other threads of the process still may."""
    if threading.current_thread() is threading.main_thread():
        raise AssertionError(f"slept {seconds} s: the wait did not watch the command's exit")
    _SLEEP(seconds)


def _opened_pidfds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pidfds the wait opens from now on."""
    opened: list[int] = []
    pidfd_open = os.pidfd_open

    def recording(pid: int, flags: int = 0) -> int:
        opened.append(pidfd_open(pid, flags))
        return opened[-1]

    monkeypatch.setattr(os, "pidfd_open", recording)
    return opened


def _is_pidfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds are Linux's")
def test_the_wait_ends_when_the_command_exits_not_at_the_next_poll(monkeypatch: pytest.MonkeyPatch):
    # Given a command that runs a moment, and polls an hour apart that may not be slept through
    proc = _start("sleep 0.2; exit 7")
    monkeypatch.setattr(time, "sleep", _no_sleep)
    opened = _opened_pidfds(monkeypatch)

    # When it is waited for
    ending = _supervise(proc, [], poll_interval=3600, timeout=60)

    # Then the wait ended with the command (a missed exit ends it at the timeout), and its pidfd is closed
    assert (ending.returncode, ending.timed_out) == (7, False)
    assert len(opened) == 1
    assert not _is_pidfd(opened[0])


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds are Linux's")
def test_a_timeout_acts_on_time_however_far_apart_the_polls_are(monkeypatch: pytest.MonkeyPatch):
    # Given a command that outlives its timeout, and polls an hour apart
    proc = _start("sleep 60")
    monkeypatch.setattr(time, "sleep", _no_sleep)

    # When it is waited for
    ending = _supervise(proc, [], poll_interval=3600, timeout=0.5)

    # Then it timed out, and is gone
    assert ending.timed_out
    assert _gone(proc.pid)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds are Linux's")
def test_the_pidfd_is_closed_when_the_wait_ends_in_an_exception(monkeypatch: pytest.MonkeyPatch):
    # Given a command that runs until it is killed, and a caller that fails on its first output
    proc = _start("echo hello; sleep 60")
    opened = _opened_pidfds(monkeypatch)

    def on_output(text: str) -> None:
        if text:
            raise RuntimeError("the log is gone")

    # When it is waited for
    with pytest.raises(RuntimeError, match="the log is gone"):
        supervise(
            proc,
            cast(IO[bytes], proc.stdout),
            timeout=30,
            poll_interval=0.05,
            on_output=on_output,
            log_limit=99,
        )

    # Then the command is gone and the pidfd closed
    assert proc.returncode is not None
    assert len(opened) == 1
    assert not _is_pidfd(opened[0])


def _no_pidfd_open(pid: int, flags: int = 0) -> int:
    raise OSError(errno.ENOSYS, "Function not implemented")


@pytest.mark.parametrize("without", ["in_python", "in_the_kernel"])
def test_without_pidfds_the_wait_sleeps_between_polls(monkeypatch: pytest.MonkeyPatch, without: str):
    # Given no pidfd_open: a Python without it, or a kernel before 5.3
    if without == "in_python":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    else:
        monkeypatch.setattr(os, "pidfd_open", _no_pidfd_open)
    slept: list[float] = []
    sleep = time.sleep
    waiting = threading.current_thread()

    def recording(seconds: float) -> None:
        # This thread's sleeps only: time.sleep is the process's, other threads sleep too.
        if threading.current_thread() is waiting:
            slept.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording)
    proc = _start("sleep 0.2; exit 7")
    out: list[str] = []

    # When a command is waited for
    ending = _supervise(proc, out, poll_interval=0.05)

    # Then the wait slept its polls out, and still got the command's end
    assert (ending.returncode, ending.timed_out) == (7, False)
    assert slept
    assert all(seconds <= 0.05 for seconds in slept)


def test_the_tail_of_a_long_output_starts_at_a_whole_line():
    # Given a command whose output is far longer than the tail kept, in lines of 100 bytes
    proc = _start("i=0; while [ $i -lt 500 ]; do printf '%099d\\n' $i; i=$((i + 1)); done")

    # When
    ending = _supervise(proc, [])

    # Then the tail holds whole lines only, the last ones
    lines = ending.tail.splitlines()
    assert all(len(line) == 99 for line in lines)
    assert int(lines[-1]) == 499
    assert len(lines) == TAIL_BYTES // 100


def test_the_tail_of_one_line_longer_than_the_tail_is_its_end():
    # Given one line, without an end, longer than the tail kept
    proc = _start(f"head -c {TAIL_BYTES * 2} /dev/zero | tr '\\0' x; echo MemoryError")

    # When
    ending = _supervise(proc, [])

    # Then its end is kept all the same (a failure is named from it)
    assert ending.tail == "x" * (TAIL_BYTES - len("MemoryError\n")) + "MemoryError\n"


def test_output_tail_keeps_the_last_ten_non_empty_lines_on_one_line():
    # Given output with blank lines, padding, a terminal colour and a carriage-return progress line
    output = "".join(f"  line {number}\n\n" for number in range(20)) + "50%\r100%\r\n\x1b[31merror\x1b[0m\n"

    # When / Then
    assert output_tail(output) == " | ".join(
        [*(f"line {number}" for number in range(12, 20)), "50%", "100%", "error"][-10:]
    )
    assert output_tail("\n \n") == ""


def test_output_tail_is_capped_at_its_end_and_redacts_before_cutting():
    # Given a last line longer than the cap, with a URL's credentials where the cut falls
    url = "https://deploy:" + "t" * 100 + "@git.example.com/site.git"
    output = "first\n" + "y" * (DETAIL_TAIL_CHARS - 40) + " " + url + " failed\n"

    # When
    tail = output_tail(output)

    # Then its end is kept, whole URLs never show their secret even when the cut falls inside them
    assert len(tail) == DETAIL_TAIL_CHARS
    assert tail.startswith("…")
    assert tail.endswith(" https://***@git.example.com/site.git failed")
    assert "t" * 10 not in tail


def test_with_output_tail_adds_the_output_to_a_detail_only_when_there_is_some():
    # When / Then
    assert with_output_tail("build exceeded 5 s", "compiling\n") == "build exceeded 5 s: compiling"
    assert with_output_tail("build exceeded 5 s", "") == "build exceeded 5 s"


def test_redacted_lines_pass_whole_lines_on_and_find_a_url_split_between_reads():
    # Given a sink behind RedactedLines
    sink: list[str] = []
    lines = RedactedLines(sink.append)

    # When a URL with credentials arrives in pieces, then an unfinished last line
    for piece in ("Cloning into 'x'...\nfatal: https://bob:s3", "cret@git.example.com/r.git\n", "tail"):
        lines(piece)
    before_close = list(sink)
    lines.close()

    # Then each line came whole and redacted, and the unfinished one at the close
    assert before_close == ["Cloning into 'x'...\n", "fatal: https://***@git.example.com/r.git\n"]
    assert sink[-1] == "tail"


def test_redacted_lines_pass_a_silent_polls_tick_on_without_a_partial_line():
    # Given a sink behind RedactedLines holding half a line with a URL's credentials
    sink: list[str] = []
    lines = RedactedLines(sink.append)
    lines("fetching https://deploy:s3cr")

    # When a silent poll's tick comes
    lines("")

    # Then the sink gets the tick, and nothing of the unfinished line (its secret included)
    assert sink == [""]
    lines("et@git.example.com/x\n")
    assert sink == ["", "fetching https://***@git.example.com/x\n"]
