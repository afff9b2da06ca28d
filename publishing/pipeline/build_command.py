"""Running a build's command: behind the limits wrapper (and bwrap, when sandboxed), watched, then named.

No Python runs between fork and exec (no `preexec_fn`): in a forked child of a multi-threaded worker
that can deadlock, and Popen would then wait on the child forever, past any TimeLimit or Abort.
subprocess switches the user in C; the rlimits are set by `_EXEC_WRAPPER`, a fresh interpreter that
sets them and then execs the command. It reports a command it cannot execute with `_EXEC_FAILED`.
The wait itself (output, timeout, cancellation, the process group's end) is processes.supervise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, cast

from publishing.exceptions import PermanentJobError
from publishing.pipeline.build_limits import (
    BuildLimits,
    BuildOutcome,
    classify_build,
    count_tasks,
    rlimit_plan,
)
from publishing.pipeline.build_user import Identity
from publishing.pipeline.processes import supervise

logger = logging.getLogger(__name__)

# How often the waiting thread wakes while the command runs (its exit and the timeout wake it at
# once): this bounds how late an async exception acts and output reaches the log.
POLL_INTERVAL = 0.05
# How often the build user's tasks are counted while the build runs (a scan of /proc).
PROCESS_CHECK_INTERVAL = 0.5

# What every build's environment holds so that its output reaches the log in the order it was
# written. stdout and stderr share one pipe (`_start`), so the log has the order in which writes
# reached it; but a program that buffers its stdout on a pipe writes it late, after the stderr lines
# that followed it. Python does (mkdocs, Sphinx, Pelican and build scripts run on it): it is told not
# to. A pseudo-terminal would line-buffer C stdio programs too, and is not used: on a terminal tools
# turn on colours and `\r` progress bars that fill the capped log, read isatty() as "someone is
# watching" (prompts, pagers), and get `\r\n` for `\n`; its end reads as EIO, not EOF; and the
# sandboxed build, under another uid, would hold a terminal of the worker's devpts, whose ioctls
# (line disciplines, TIOCSTI) are kernel surface a build has no use for. A build that wants a C
# tool's lines in order runs it as `stdbuf -oL tool`.
ORDERED_OUTPUT_ENVIRONMENT = {"PYTHONUNBUFFERED": "1"}

# What the wrapper writes, then the command and why, when it cannot execute the command (exit 127).
_EXEC_FAILED = "publisher-build: cannot execute"
_EXEC_FAILED_STATUS = 127
# argv: [python, -I, -S, -c, _EXEC_WRAPPER, "<resource>:<soft>:<hard>"..., ["relay=<port>=<socket>"],
# --, *command]. -I -S: no site-packages, no PYTHON* variables, nothing of the build's checkout on
# sys.path. Plain arguments rather than JSON spare an import (~15 ms). Kept to what any python3 runs,
# since the build user may only be able to run the system's. A relay (a sandbox with `public`
# network) is a child of the wrapper, under the build's limits, that carries each connection to
# 127.0.0.1:<port> over to the build proxy's Unix socket (build_proxy.py); it dies with the sandbox.
_EXEC_WRAPPER = f"""\
import os, resource, sys
end = sys.argv.index("--")
relay = None
for spec in sys.argv[1:end]:
    if spec.startswith("relay="):
        relay = spec.split("=", 2)[1:]
        continue
    res, soft, hard = map(int, spec.split(":"))
    resource.setrlimit(res, (soft, hard))
if relay is not None:
    import socket, threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", int(relay[0])))
    listener.listen(64)
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        def pipe(source, sink):
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    sink.sendall(data)
            except OSError:
                pass
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        def carry(client):
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(relay[1])
            except OSError:
                client.close()
                return
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            pipe(upstream, client)
        while True:
            client, _ = listener.accept()
            try:
                threading.Thread(target=carry, args=(client,), daemon=True).start()
            except RuntimeError:
                client.close()  # past the build's process limit: this connection only fails
    listener.close()
argv = sys.argv[end + 1 :]
try:
    os.execvp(argv[0], argv)
except OSError as exc:
    line = "%s %r: %s\\n" % ({_EXEC_FAILED!r}, argv[0], exc.strerror or exc)
    os.write(2, line.encode("utf-8", "backslashreplace"))
    os._exit({_EXEC_FAILED_STATUS})
"""


def _wrapped(
    argv: list[str], plan: list[tuple[int, int, int]], interpreter: str, relay: tuple[int, str] | None = None
) -> list[str]:
    """`argv` behind `_EXEC_WRAPPER`, which applies `plan`, starts the relay if any, then execs it."""
    limits = [f"{res}:{soft}:{hard}" for res, soft, hard in plan]
    relays = [f"relay={relay[0]}={relay[1]}"] if relay else []
    return [interpreter, "-I", "-S", "-c", _EXEC_WRAPPER, *limits, *relays, "--", *argv]


def _exec_failure(outcome: BuildOutcome, command: str) -> PermanentJobError | None:
    """BUILD_COMMAND_INVALID if the wrapper could not execute `command`, else None."""
    # The wrapper's line is then all the output: nothing of the build ever ran. A build that prints
    # that very line and exits 127 only misnames its own failure.
    line = outcome.tail
    if (
        outcome.returncode != _EXEC_FAILED_STATUS
        or not line.startswith(f"{_EXEC_FAILED} ")
        or not line.endswith("\n")
        or line.count("\n") != 1
    ):
        return None
    reason = line.rstrip("\n").rpartition(": ")[2]
    return PermanentJobError(
        f"build command {command!r} cannot be executed: {reason}", code="BUILD_COMMAND_INVALID"
    )


class _TaskWatch:
    """Whether the build's uid has reached its task allowance, counted every PROCESS_CHECK_INTERVAL."""

    def __init__(self, uid: int, nproc: int) -> None:
        self._uid = uid
        self._nproc = nproc
        self._next_count = time.monotonic() + PROCESS_CHECK_INTERVAL

    def __call__(self, at_deadline: bool) -> bool:
        now = time.monotonic()
        if not (now >= self._next_count or at_deadline):
            return False
        self._next_count = now + PROCESS_CHECK_INTERVAL
        # A fork bomb that swallows its EAGAINs would otherwise spin silently until the timeout.
        return count_tasks(self._uid) >= self._nproc


def execute(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    identity: Identity | None,
    interpreter: str,
    limits: BuildLimits,
    timeout: int,
    output_limit: int,
    on_output: Callable[[str], None],
    prefix: Sequence[str] = (),
    pass_fds: Sequence[int] = (),
    relay: tuple[int, str] | None = None,
    own_tasks: int = 0,
) -> None:
    """Run `argv` behind the limits wrapper (and `prefix`: the sandbox), wait, and classify the end."""
    uid = identity.uid if identity is not None else os.getuid()
    # RLIMIT_NPROC counts every task of the real uid, so the build gets an allowance on top of what
    # that uid runs now (the worker's own threads included when it is the worker's uid). Root ignores it.
    watch_processes = bool(limits.processes) and uid != 0
    nproc = count_tasks(uid) + own_tasks + limits.processes if watch_processes else 0
    plan = rlimit_plan(limits, nproc)
    logger.info(
        "Running build %r in %s as uid %s (timeout %s s, %s, %s)",
        argv,
        cwd,
        uid,
        timeout,
        limits,
        "sandboxed" if prefix else "no sandbox",
    )
    # An OSError here is the wrapper's interpreter, bwrap or the checkout going missing, not the
    # command: the wrapper reports that one (see _exec_failure).
    proc = _start([*prefix, *_wrapped(argv, plan, interpreter, relay)], cwd, env, identity, pass_fds)
    ending = supervise(
        proc,
        cast(IO[bytes], proc.stdout),  # stdout=PIPE guarantees a stream
        timeout=timeout,
        poll_interval=POLL_INTERVAL,
        on_output=on_output,
        log_limit=output_limit,
        stop_limit=limits.output_bytes,
        should_stop=_TaskWatch(uid, nproc) if watch_processes else None,
        label="build",
    )
    # The only thing that stops the wait early is the process-limit watch.
    outcome = BuildOutcome(**dataclasses.asdict(ending), process_limit_reached=ending.stopped)
    error = _exec_failure(outcome, argv[0]) or classify_build(outcome, limits=limits, timeout=timeout)
    if error is not None:
        logger.info("Build %r failed: %s (%s)", argv, error.code, error.detail)
        raise error


def _start(
    command: list[str], cwd: Path, env: dict[str, str], identity: Identity | None, pass_fds: Sequence[int]
) -> subprocess.Popen[bytes]:
    """`command` started as `identity` in a session of its own, its stdout and stderr on one pipe."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        pass_fds=pass_fds,
        # Done in C by subprocess between fork and exec: no supplementary groups, then gid, then uid.
        user=identity.uid if identity else None,
        group=identity.gid if identity else None,
        extra_groups=[] if identity else None,
    )
