"""The one wait on a command in a process group of its own (the checkout's git, the build): output,
timeout, the caller's stop, cancellation by an asynchronous exception, and no process of the group left
afterwards by any of them."""

from __future__ import annotations

import ctypes
import subprocess
import threading
from pathlib import Path
from typing import IO, cast

from publishing.pipeline.processes import TRUNCATION_MARKER, Ending, supervise
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
