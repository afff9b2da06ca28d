"""Running a command in a process group of its own: the one waiting loop of the checkout and the build.

The command is started by the caller (`start_new_session=True`, its output on a pipe); `supervise`
drains that pipe in a thread, waits in short slices (each ends as soon as the command exits), and
kills the whole group on a timeout, on the caller's stop condition or on any exception in the
waiting thread, then reaps the command.
`with_output_tail` ends a failed step's error detail with the last lines of its command's output.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import queue
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from publishing.redaction import redact_credentials

logger = logging.getLogger(__name__)

TRUNCATION_MARKER = "\n[output truncated]\n"
READ_CHUNK = 64 * 1024
# The end of the output kept for classifying a failure (MemoryError, "File too large", ...).
TAIL_BYTES = 8 * 1024
# How long to wait for the reader once the process group is dead (a writer that left the group may linger).
READER_JOIN_TIMEOUT = 5.0
# How much of a failed step's output its error detail ends with: enough for the cause, short enough
# for the API, the admin's lists and a log line.
DETAIL_TAIL_LINES = 10
DETAIL_TAIL_CHARS = 2000
# Terminal escapes (colours) and control characters, which mean nothing in an error detail.
_CONTROL_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Ending:
    """How the wait for a command ended."""

    returncode: int
    # User and system time of the command and the descendants it waited for (wait4's rusage).
    cpu_seconds: float
    # The end of the output, decoded: its last TAIL_BYTES, from the first line that starts in them
    # (all of them if none does).
    tail: str
    timed_out: bool = False
    # More than `stop_limit` bytes of output came.
    output_exceeded: bool = False
    # The caller's `should_stop` said so.
    stopped: bool = False


class OutputReader:
    """Drains a command's output pipe in a thread of its own.

    Queues the first `log_limit` bytes as text (then the truncation marker once), keeps the last
    TAIL_BYTES, and calls `stop` once more than `stop_limit` bytes (if set) came.
    """

    def __init__(
        self, fd: int, *, log_limit: int, stop_limit: int, stop: Callable[[], None], label: str, name: str
    ) -> None:
        self.chunks: queue.Queue[str] = queue.Queue()
        self.exceeded = False
        self._fd = fd
        self._log_limit = log_limit
        self._stop_limit = stop_limit
        self._stop = stop
        self._tail = bytearray()
        self._tail_cut = False
        self.label = label
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tail(self) -> str:
        text = bytes(self._tail).decode("utf-8", errors="replace")
        _, newline, whole_lines = text.partition("\n")
        # A line cut at its start could show the end of a URL without the scheme that marks its
        # credentials; one line longer than the tail stays, for naming the failure.
        return whole_lines if self._tail_cut and newline and whole_lines else text

    def _run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        remaining = self._log_limit
        total = 0
        truncated = False
        try:
            # Read to EOF even past the limits: a command blocked on a full pipe ends only at its timeout.
            while data := os.read(self._fd, READ_CHUNK):
                total += len(data)
                self._keep_tail(data)
                if self._stop_limit and total > self._stop_limit and not self.exceeded:
                    self.exceeded = True
                    self._stop()
                if truncated:
                    continue
                kept = data[:remaining]
                truncated = len(kept) < len(data)
                remaining -= len(kept)
                if text := decoder.decode(kept):
                    self.chunks.put(text)
                if truncated:
                    # A multi-byte character cut at the cap is dropped rather than shown as garbage.
                    self.chunks.put(TRUNCATION_MARKER)
            if not truncated and (tail := decoder.decode(b"", final=True)):
                self.chunks.put(tail)
        except OSError:
            logger.exception("Reading %s output failed", self.label)

    def _keep_tail(self, data: bytes) -> None:
        self._tail += data
        if len(self._tail) > TAIL_BYTES:
            self._tail_cut = True
            del self._tail[:-TAIL_BYTES]

    def deliver(self, on_output: Callable[[str], None]) -> bool:
        """Pass on what came; False if nothing did."""
        delivered = False
        while True:
            try:
                text = self.chunks.get_nowait()
            except queue.Empty:
                return delivered
            on_output(text)
            delivered = True


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group `proc` leads (its session), if any of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def reap(proc: subprocess.Popen[bytes]) -> float | None:
    """The command's CPU seconds if it has exited (and is now reaped), else None."""
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:
        # Reaped elsewhere (SIGCHLD ignored): the status is lost, as Popen.wait() would also find.
        proc.returncode = 0 if proc.returncode is None else proc.returncode
        return 0.0
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def supervise(
    proc: subprocess.Popen[bytes],
    output: IO[bytes],
    *,
    timeout: float,
    poll_interval: float,
    on_output: Callable[[str], None],
    log_limit: int,
    stop_limit: int = 0,
    should_stop: Callable[[bool], bool] | None = None,
    label: str = "command",
) -> Ending:
    """Wait for `proc` (the leader of its own process group) while streaming `output` to `on_output`.

    At most `log_limit` bytes reach `on_output`, from the calling thread only; while the command is
    silent, `on_output("")` comes at each poll, so that the caller can write what it holds (the last
    line before a long pause, a prompt without its line's end) without waiting for more. The group is killed
    past `timeout` seconds, past `stop_limit` bytes of output, when `should_stop(at_deadline)` says so,
    and on any exception in this thread (which is raised again); whatever ends the wait, no process of
    the group survives it and the command is reaped.
    """
    try:
        reader = OutputReader(
            output.fileno(),
            log_limit=log_limit,
            stop_limit=stop_limit,
            stop=lambda: kill_group(proc),
            label=label,
            name=f"{label}-output-{proc.pid}",
        )
        reader.thread.start()
    except BaseException:
        # No command runs unwatched ("can't start new thread" included).
        kill_group(proc)
        proc.wait()
        raise
    try:
        cpu_seconds, timed_out, stopped = _wait(proc, reader, timeout, poll_interval, on_output, should_stop)
    except BaseException:
        _finish(proc, reader, output)
        raise
    # Also reaps what the command left running in the background, which would hold the pipe open.
    _finish(proc, reader, output)
    reader.deliver(on_output)
    return Ending(
        returncode=proc.returncode,
        cpu_seconds=cpu_seconds,
        tail=reader.tail(),
        timed_out=timed_out,
        output_exceeded=reader.exceeded,
        stopped=stopped,
    )


def _wait(
    proc: subprocess.Popen[bytes],
    reader: OutputReader,
    timeout: float,
    poll_interval: float,
    on_output: Callable[[str], None],
    should_stop: Callable[[bool], bool] | None,
) -> tuple[float, bool, bool]:
    """(CPU seconds, timed out, stopped) once `proc` exits, `timeout` passes or `should_stop` says so."""
    deadline = time.monotonic() + timeout
    # Short waits, not one long one: an asynchronous exception (a cancellation) is only raised
    # between bytecodes, never inside a blocking call. Each ends early when the command exits.
    with _exit_waiter(proc) as wait_for_exit:
        while True:
            if not reader.deliver(on_output):
                on_output("")
            if (usage := reap(proc)) is not None:
                return usage, False, False
            now = time.monotonic()
            if should_stop is not None and should_stop(now >= deadline):
                return 0.0, False, True
            if now >= deadline:
                return 0.0, True, False
            wait_for_exit(min(poll_interval, deadline - now))


@contextlib.contextmanager
def _exit_waiter(proc: subprocess.Popen[bytes]) -> Iterator[Callable[[float], object]]:
    """A wait of at most the seconds it is given that ends as soon as `proc` exits: a poll of its pidfd
    (Linux 5.3+). Where there is none, it sleeps them out."""
    pidfd = -1
    # Opened inside the try, so an exception raised in this thread right after the open (an abort, a
    # KeyboardInterrupt) still closes it. It stays -1 with no pidfd_open in this Python or kernel, or
    # when the command is already reaped (SIGCHLD ignored).
    try:
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(proc.pid)
        if pidfd < 0:
            yield time.sleep
            return
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        yield lambda seconds: poller.poll(seconds * 1000)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _finish(proc: subprocess.Popen[bytes], reader: OutputReader, output: IO[bytes]) -> None:
    """Kill the process group, reap the command, and stop the output reader."""
    kill_group(proc)
    proc.wait()
    reader.thread.join(READER_JOIN_TIMEOUT)
    if reader.thread.is_alive():
        logger.warning(
            "%s output reader still running: a process left the %s's process group",
            reader.label.capitalize(),
            reader.label,
        )
    else:
        output.close()


class RedactedLines:
    """Passes output on to `sink` a whole line at a time, credentials redacted: a URL split between two
    reads is still recognised. `close` passes on the rest of an unfinished last line."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._pending = ""

    def __call__(self, text: str) -> None:
        if not text:
            # A silent poll's tick (see `supervise`): passed on, for the sink to write what it holds.
            self._sink("")
            return
        text = self._pending + text
        end = max(text.rfind("\n"), text.rfind("\r")) + 1
        self._pending = text[end:]
        if end:
            self._sink(redact_credentials(text[:end]))

    def close(self) -> None:
        if self._pending:
            self._sink(redact_credentials(self._pending))
            self._pending = ""


def output_tail(output: str) -> str:
    """The last DETAIL_TAIL_LINES non-empty lines of `output` on one line, joined by " | ", without
    credentials or control characters, at most DETAIL_TAIL_CHARS (the end kept)."""
    lines = [_CONTROL_RE.sub("", line).strip() for line in output.splitlines()]
    # Redacted line by line, before any cut: a URL cut short could hide its scheme, and so its secret.
    kept = [redact_credentials(line) for line in lines if line][-DETAIL_TAIL_LINES:]
    tail = " | ".join(kept)
    return tail if len(tail) <= DETAIL_TAIL_CHARS else "…" + tail[-(DETAIL_TAIL_CHARS - 1) :]


def with_output_tail(detail: str, output: str) -> str:
    """A failed step's error detail: `detail`, then the end of its command's output (`output_tail`).

    The one form for the checkout and the build, so that `error_message` shows the cause next to
    the status.
    """
    tail = output_tail(output)
    return f"{detail}: {tail}" if tail else detail
