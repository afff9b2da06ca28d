"""Build step: run the project's build command in its checkout, bounded in time, output and file size.

The command runs without a shell, in its own process group (so a timeout or a cancellation kills
everything it started), with a scrubbed environment that carries none of the worker's secrets.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import queue
import resource
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

from publishing.exceptions import PermanentJobError

logger = logging.getLogger(__name__)

# The largest file a build may write; a runaway build fails with SIGXFSZ instead of filling the disk.
MAX_FILE_SIZE = 2 * 1024**3
TRUNCATION_MARKER = "\n[output truncated]\n"
READ_CHUNK = 64 * 1024
# How often the waiting thread wakes: this bounds how late a timeout or an async exception acts.
POLL_INTERVAL = 0.2
# How long to wait for the reader once the process group is dead (a writer that left the group may linger).
READER_JOIN_TIMEOUT = 5.0


def build_environment(workdir: Path) -> dict[str, str]:
    """A build's whole environment: PATH, a private HOME/TMPDIR beside `workdir`, nothing else."""
    home = workdir.parent / "home"
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "CI": "true",
    }


def _limit_resources() -> None:
    """Runs in the child between fork and exec: no core dumps, no file larger than MAX_FILE_SIZE."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # An unprivileged process may lower but never raise its hard limit.
    limit = MAX_FILE_SIZE if hard == resource.RLIM_INFINITY else min(MAX_FILE_SIZE, hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _read_output(fd: int, limit: int, chunks: queue.Queue[str]) -> None:
    """Queue up to `limit` bytes read from `fd` as text, then the marker once; drain `fd` to EOF."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    remaining = limit
    truncated = False
    try:
        while data := os.read(fd, READ_CHUNK):
            if truncated:
                # Keep reading: a build blocked on a full pipe would only end at its timeout.
                continue
            kept = data[:remaining]
            truncated = len(kept) < len(data)
            remaining -= len(kept)
            if text := decoder.decode(kept):
                chunks.put(text)
            if truncated:
                # A multi-byte character cut at the cap is dropped rather than shown as garbage.
                chunks.put(TRUNCATION_MARKER)
        if not truncated and (tail := decoder.decode(b"", final=True)):
            chunks.put(tail)
    except OSError:
        logger.exception("Reading build output failed")


def _deliver(chunks: queue.Queue[str], on_output: Callable[[str], None]) -> None:
    while True:
        try:
            text = chunks.get_nowait()
        except queue.Empty:
            return
        on_output(text)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"build command was killed by {name}"
    return f"build command exited with status {returncode}"


def run_build(
    command: str, *, cwd: Path, timeout: int, output_limit: int, on_output: Callable[[str], None]
) -> None:
    """Run `command` in `cwd`; stream at most `output_limit` bytes of its output to `on_output`.

    Raises PermanentJobError: BUILD_COMMAND_INVALID, BUILD_TIMEOUT or BUILD_FAILED. Whatever ends the
    wait (success, failure, timeout, an exception in this thread), no process of the build survives it.
    `on_output` is called from the calling thread only.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise PermanentJobError(
            f"build command cannot be parsed: {exc}", code="BUILD_COMMAND_INVALID"
        ) from exc
    if not argv:
        raise PermanentJobError("build command is empty", code="BUILD_COMMAND_INVALID")
    env = build_environment(cwd)
    logger.info("Running build %r in %s (timeout %s s)", argv, cwd, timeout)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            # preexec_fn is documented as unsafe with threads; this one only makes two syscalls.
            preexec_fn=_limit_resources,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise PermanentJobError(
            f"build command {argv[0]!r} cannot be executed: {exc.strerror}", code="BUILD_COMMAND_INVALID"
        ) from exc
    stdout = cast(IO[bytes], proc.stdout)  # stdout=PIPE guarantees a stream
    chunks: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=_read_output,
        args=(stdout.fileno(), output_limit, chunks),
        name=f"build-output-{proc.pid}",
        daemon=True,
    )
    reader.start()
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        # Short waits, not one long one: an asynchronous exception (a cancellation) is only raised
        # between bytecodes, never inside a blocking wait.
        while True:
            _deliver(chunks, on_output)
            try:
                proc.wait(timeout=POLL_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
    except BaseException:
        _finish(proc, reader)
        raise
    # Also reaps what the command left running in the background, which would hold the pipe open.
    _finish(proc, reader)
    _deliver(chunks, on_output)
    if timed_out:
        logger.warning("Build %r timed out after %s s", argv, timeout)
        raise PermanentJobError(f"build exceeded {timeout} s", code="BUILD_TIMEOUT")
    if proc.returncode != 0:
        detail = _describe_status(proc.returncode)
        logger.info("Build %r failed: %s", argv, detail)
        raise PermanentJobError(detail, code="BUILD_FAILED")


def _finish(proc: subprocess.Popen[bytes], reader: threading.Thread) -> None:
    """Kill the build's process group, reap the command, and stop the output reader."""
    _kill_group(proc)
    proc.wait()
    reader.join(READER_JOIN_TIMEOUT)
    if reader.is_alive():
        logger.warning("Build output reader still running: a process left the build's process group")
    elif proc.stdout is not None:
        proc.stdout.close()
