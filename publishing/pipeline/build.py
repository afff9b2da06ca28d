"""Build step: run the project's build command in its checkout, inside resource limits.

The command runs without a shell, in its own process group (so a timeout, a limit or a cancellation
kills everything it started), with a scrubbed environment that carries none of the worker's secrets,
and under rlimits for CPU time, address space, file size and process count. Its output is capped:
past `BuildLimits.output_bytes` the build is stopped.

Sandboxed (publishing/pipeline/sandbox.py, the default where bwrap is installed, and required in
production), the build runs in namespaces of its own, as a uid no other running build has, and
every process of it ends with it. Unsandboxed, a root worker runs it as `PUBLISHING_BUILD_USER`:
root ignores RLIMIT_NPROC, and only another user is kept away from the worker's files.

No Python runs between fork and exec (no `preexec_fn`): in a forked child of a multi-threaded worker
that can deadlock, and Popen would then wait on the child forever, past any TimeLimit or Abort.
subprocess switches the user in C; the rlimits are set by `_EXEC_WRAPPER`, a fresh interpreter that
sets them and then execs the command. It reports a command it cannot execute with `_EXEC_FAILED`.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import pwd
import queue
import resource
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from django.conf import settings

from publishing.exceptions import PermanentJobError
from publishing.hygiene import make_non_dumpable
from publishing.pipeline.build_proxy import PROXY_PORT, BuildProxy
from publishing.pipeline.sandbox import (
    PROXY_SOCKET,
    SandboxPolicy,
    bwrap_argv,
    identity_files,
    lease_uid,
    processes_by_uid,
)
from publishing.pipeline.sandbox import (
    environment as sandbox_environment,
)
from publishing.pipeline.sandbox import (
    interpreter as sandbox_interpreter,
)

logger = logging.getLogger(__name__)

TRUNCATION_MARKER = "\n[output truncated]\n"
READ_CHUNK = 64 * 1024
# The end of the output kept for classifying a failure (MemoryError, "File too large", ...).
TAIL_BYTES = 8 * 1024
# How often the waiting thread wakes: this bounds how late a timeout or an async exception acts.
POLL_INTERVAL = 0.05
# How often the build user's tasks are counted while the build runs (a scan of /proc).
PROCESS_CHECK_INTERVAL = 0.5
# After SIGXCPU at the soft CPU limit, a process that ignores it gets SIGKILL this much later.
CPU_KILL_GRACE = 5
# How long to wait for the reader once the process group is dead (a writer that left the group may linger).
READER_JOIN_TIMEOUT = 5.0

# Heuristics, matched (lower-cased) against the end of the output of a build that failed: a process
# that meets RLIMIT_AS sees malloc/mmap fail and reports it its own way; nothing else tells us.
# A build that prints one of these for another reason is misreported as hitting the limit.
_MEMORY_MARKERS = (
    "memoryerror",  # Python
    "cannot allocate memory",  # ENOMEM from fork, mmap, exec
    "out of memory",  # Go ("runtime: out of memory"), Node ("heap out of memory"), many C tools
    "bad_alloc",  # C++ std::bad_alloc
    "outofmemoryerror",  # Java
    "memory exhausted",  # gcc ("virtual memory exhausted"), bison
    "failed to allocate",
    "unable to allocate",
)
# The same for RLIMIT_NPROC: fork/clone then fail with EAGAIN. A silent fork bomb is found by counting.
_PROCESS_MARKERS = (
    "resource temporarily unavailable",  # EAGAIN (bash "fork: retry: ...", Python BlockingIOError)
    "can't start new thread",  # Python
    "cannot fork",
    "can't fork",
    "fork failed",
    "spawn eagain",  # Node
    "failed to create new os thread",  # Go
    "unable to create native thread",  # Java
)

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

# PUBLISHING_BUILD_USER's name for "the worker's own user, even root".
WORKER_USER = "worker"


@dataclass(frozen=True)
class BuildLimits:
    """The resources one build may use, 0 meaning no limit, and who runs it."""

    # CPU seconds per process (all its threads): SIGXCPU, then SIGKILL CPU_KILL_GRACE s later.
    cpu_seconds: int = 0
    # Address space per process (RLIMIT_AS), not resident memory.
    memory_bytes: int = 0
    # Largest file a build may write (RLIMIT_FSIZE): SIGXFSZ, or EFBIG where that is ignored.
    file_size_bytes: int = 0
    # Tasks (processes and threads) the build may add to what its user already runs (RLIMIT_NPROC).
    processes: int = 0
    # Bytes of stdout and stderr together; past this the build is stopped.
    output_bytes: int = 0
    # The user a root worker runs builds as (name or uid); a non-root worker can only run its own.
    # WORKER_USER: the worker's own, even root; "" (PUBLISHING_BUILD_USER unset): the worker's own,
    # but a root worker refuses.
    user: str = WORKER_USER

    @classmethod
    def from_settings(cls) -> BuildLimits:
        return cls(
            cpu_seconds=settings.PUBLISHING_BUILD_CPU_LIMIT,
            memory_bytes=settings.PUBLISHING_BUILD_MEMORY_LIMIT,
            file_size_bytes=settings.PUBLISHING_BUILD_FILE_SIZE_LIMIT,
            processes=settings.PUBLISHING_BUILD_PROCESS_LIMIT,
            output_bytes=settings.PUBLISHING_BUILD_OUTPUT_LIMIT,
            user=settings.PUBLISHING_BUILD_USER,
        )


@dataclass(frozen=True)
class _Identity:
    uid: int
    gid: int
    name: str


@dataclass(frozen=True)
class BuildOutcome:
    """How a build ended, as far as the step saw it; `classify_build` names it."""

    returncode: int
    # User and system time of the command and the descendants it waited for (wait4's rusage).
    cpu_seconds: float
    # The end of the output, decoded.
    tail: str
    timed_out: bool = False
    output_exceeded: bool = False
    process_limit_reached: bool = False


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


def count_tasks(uid: int) -> int:
    """Tasks (processes and threads) of real uid `uid` that /proc shows: what RLIMIT_NPROC counts."""
    return sum(threads for _, threads in processes_by_uid().get(uid, ()) if threads > 0)


def _resolve_user(user: str) -> _Identity | None:
    """Who the build runs as: None for the worker's own user; PermanentJobError if that cannot be."""
    euid = os.geteuid()
    entry = None
    if user.strip() == WORKER_USER:
        if euid == 0:
            logger.warning(
                "Builds run as root (PUBLISHING_BUILD_USER=worker): the process limit does not hold "
                "and a build can read the worker's secrets"
            )
        return None
    if not user.strip() and euid == 0:
        raise PermanentJobError(
            "the worker runs as root and PUBLISHING_BUILD_USER is not set: set it to a dedicated user "
            "(or to `worker` to run builds as root knowingly)",
            code="BUILD_USER_INVALID",
        )
    if user.strip():
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise PermanentJobError(
                f"build user {user!r} does not exist", code="BUILD_USER_INVALID"
            ) from None
    if entry is None or entry.pw_uid == euid:
        if euid == 0:
            logger.warning(
                "Builds run as root (PUBLISHING_BUILD_USER=%s): the process limit does not hold", user
            )
        return None
    if euid != 0:
        raise PermanentJobError(
            f"the worker runs as uid {euid} and cannot run builds as {user!r}: that needs root",
            code="BUILD_USER_INVALID",
        )
    return _Identity(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)


def _can_search(path: Path, identity: _Identity) -> bool:
    """Whether `identity` may enter `path`, or execute it if it is a file (primary group only: builds get
    no supplementary groups)."""
    st = path.stat()
    if st.st_uid == identity.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == identity.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _chown_tree(root: Path, identity: _Identity) -> None:
    # fwalk works on directory fds and never follows a symlink, so a link in the repository cannot
    # make us chown anything outside it.
    for _, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        os.fchown(dirfd, identity.uid, identity.gid)
        for name in dirnames + filenames:
            os.chown(name, identity.uid, identity.gid, dir_fd=dirfd, follow_symlinks=False)


def _hand_over(cwd: Path, home: Path, identity: _Identity) -> None:
    """Give the build user its checkout and HOME, and a way to reach them; nothing else of the workspace.

    The workspace itself stays the worker's (mode 0711): the build cannot list it or create the
    package step's output folder there.
    """
    workspace = cwd.parent
    blocked = [str(p) for p in workspace.parents if not _can_search(p, identity)]
    if blocked:
        raise PermanentJobError(
            f"build user {identity.name!r} cannot reach the workspace: {blocked[0]} is not searchable "
            "by it; set PUBLISHING_WORKSPACE_DIR to a directory it can enter",
            code="BUILD_USER_INVALID",
        )
    workspace.chmod(0o711)
    _chown_tree(cwd, identity)
    _chown_tree(home, identity)


def _can_run(path: str, identity: _Identity | None) -> bool:
    """Whether `identity` (None: this process) may execute the file `path`, following its symlinks."""
    real = Path(os.path.realpath(path))
    if not os.path.isfile(real):  # also False where a folder on the way is closed to this process
        return False
    if identity is None:
        return os.access(real, os.X_OK)
    return all(_can_search(p, identity) for p in (real, *real.parents, *Path(path).parents))


def _wrapper_interpreter(identity: _Identity | None, path: str) -> str:
    """The Python that runs `_EXEC_WRAPPER`: the worker's own, else the first python3 on `path`, that the
    build's user can execute; PermanentJobError if there is none."""
    # The worker's interpreter may live where only the worker can reach (a venv under /root); the
    # wrapper needs nothing of it, any python3 will do.
    candidates = [sys.executable] if sys.executable else []
    candidates += [os.path.join(folder, "python3") for folder in path.split(os.pathsep) if folder]
    for candidate in candidates:
        if _can_run(candidate, identity):
            return candidate
    user = repr(identity.name) if identity else "the worker's user"
    raise PermanentJobError(
        f"build user {user} can execute neither {sys.executable!r} nor a python3 on PATH, and one sets "
        "the build's limits",
        code="BUILD_USER_INVALID",
    )


def _rlimit_plan(limits: BuildLimits, nproc: int) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for the build, clamped to the current hard limits (they may only go down)."""
    wanted = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + CPU_KILL_GRACE),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_NPROC, nproc, nproc),
    ]
    plan: list[tuple[int, int, int]] = []
    for res, soft, hard in wanted:
        if res != resource.RLIMIT_CORE and soft <= 0:
            continue
        _, current = resource.getrlimit(res)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        plan.append((res, soft, hard))
    return plan


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


class _OutputReader:
    """Drains the build's output pipe in a thread of its own.

    Queues the first `log_limit` bytes as text (then the truncation marker once), keeps the last
    TAIL_BYTES for `classify_build`, and calls `stop` once more than `stop_limit` bytes (if set) came.
    """

    def __init__(
        self, fd: int, *, log_limit: int, stop_limit: int, stop: Callable[[], None], name: str
    ) -> None:
        self.chunks: queue.Queue[str] = queue.Queue()
        self.exceeded = False
        self._fd = fd
        self._log_limit = log_limit
        self._stop_limit = stop_limit
        self._stop = stop
        self._tail = bytearray()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tail(self) -> str:
        return bytes(self._tail).decode("utf-8", errors="replace")

    def _run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        remaining = self._log_limit
        total = 0
        truncated = False
        try:
            # Read to EOF even past the limits: a build blocked on a full pipe would only end at its timeout.
            while data := os.read(self._fd, READ_CHUNK):
                total += len(data)
                self._tail += data
                del self._tail[:-TAIL_BYTES]
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
            logger.exception("Reading build output failed")

    def deliver(self, on_output: Callable[[str], None]) -> None:
        while True:
            try:
                text = self.chunks.get_nowait()
            except queue.Empty:
                return
            on_output(text)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _reap(proc: subprocess.Popen[bytes]) -> float | None:
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


def _describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"build command was killed by {name}"
    with contextlib.suppress(ValueError):
        # How a shell, and the sandbox, report a command that a signal killed.
        if returncode > 128:
            return f"build command exited with status {returncode} ({signal.Signals(returncode - 128).name})"
    return f"build command exited with status {returncode}"


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


def classify_build(outcome: BuildOutcome, *, limits: BuildLimits, timeout: int) -> PermanentJobError | None:
    """The error a build ended with, or None if it succeeded: the one place that names build failures."""
    if outcome.output_exceeded:
        return PermanentJobError(
            f"build output exceeded {_size(limits.output_bytes)}; the build was stopped",
            code="BUILD_OUTPUT_LIMIT",
        )
    if outcome.process_limit_reached:
        return PermanentJobError(
            f"build reached its limit of {limits.processes} more processes and threads and was stopped",
            code="BUILD_PROCESS_LIMIT",
        )
    if outcome.timed_out:
        return PermanentJobError(f"build exceeded {timeout} s", code="BUILD_TIMEOUT")
    if outcome.returncode == 0:
        return None
    status = _describe_status(outcome.returncode)
    # A shell reports a child killed by signal N as exit status 128 + N.
    signum = -outcome.returncode if outcome.returncode < 0 else outcome.returncode - 128
    tail = outcome.tail.lower()
    if limits.cpu_seconds and (
        signum == signal.SIGXCPU
        or (signum == signal.SIGKILL and outcome.cpu_seconds >= limits.cpu_seconds)
        or "cpu time limit exceeded" in tail
    ):
        return PermanentJobError(
            f"build used more than {limits.cpu_seconds} s of CPU time in one process ({status})",
            code="BUILD_CPU_LIMIT",
        )
    if limits.file_size_bytes and (signum == signal.SIGXFSZ or "file too large" in tail):
        return PermanentJobError(
            f"build wrote a file larger than {_size(limits.file_size_bytes)} ({status})",
            code="BUILD_FILE_LIMIT",
        )
    if limits.memory_bytes and any(marker in tail for marker in _MEMORY_MARKERS):
        return PermanentJobError(
            f"build ran out of memory (limit {_size(limits.memory_bytes)} of address space; {status})",
            code="BUILD_MEMORY_LIMIT",
        )
    if limits.processes and any(marker in tail for marker in _PROCESS_MARKERS):
        return PermanentJobError(
            f"build could not start more processes or threads (limit {limits.processes}; {status})",
            code="BUILD_PROCESS_LIMIT",
        )
    return PermanentJobError(status, code="BUILD_FAILED")


def run_build(
    command: str,
    *,
    cwd: Path,
    timeout: int,
    output_limit: int,
    on_output: Callable[[str], None],
    limits: BuildLimits | None = None,
    sandbox: SandboxPolicy | None = None,
) -> None:
    """Run `command` in `cwd` within `limits` and `sandbox` (default: the settings); stream at most
    `output_limit` bytes of its output to `on_output`.

    Raises PermanentJobError: BUILD_COMMAND_INVALID, BUILD_USER_INVALID, SANDBOX_UNAVAILABLE,
    BUILD_TIMEOUT, BUILD_OUTPUT_LIMIT, BUILD_PROCESS_LIMIT, BUILD_CPU_LIMIT, BUILD_FILE_LIMIT,
    BUILD_MEMORY_LIMIT or BUILD_FAILED; TransientJobError SANDBOX_BUSY. Whatever ends the wait
    (success, failure, a limit, an exception in this thread), no process of the build survives it.
    `on_output` is called from the calling thread only.
    """
    limits = limits if limits is not None else BuildLimits.from_settings()
    sandbox = sandbox if sandbox is not None else SandboxPolicy.from_settings()
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise PermanentJobError(
            f"build command cannot be parsed: {exc}", code="BUILD_COMMAND_INVALID"
        ) from exc
    if not argv:
        raise PermanentJobError("build command is empty", code="BUILD_COMMAND_INVALID")
    bwrap = sandbox.bwrap()
    if bwrap is None:
        _run_unsandboxed(
            argv, cwd=cwd, timeout=timeout, output_limit=output_limit, on_output=on_output, limits=limits
        )
        return
    home = cwd.parent / "home"
    home.mkdir(exist_ok=True)
    interpreter = sandbox_interpreter()
    with contextlib.ExitStack() as stack:
        identity = None
        if os.geteuid() == 0:
            uid = stack.enter_context(lease_uid(sandbox.uids))
            identity = _Identity(uid=uid, gid=uid, name=f"uid {uid}")
            _hand_over(cwd, home, identity)
        else:
            make_non_dumpable()
        uid = identity.uid if identity else os.getuid()
        gid = identity.gid if identity else os.getgid()
        passwd_fd, group_fd = (stack.enter_context(_data_pipe(data)) for data in identity_files(uid, gid))
        proxy = None
        if sandbox.network == "public":
            proxy = stack.enter_context(BuildProxy(cwd.parent / "proxy.sock", uid=uid, gid=gid))
        prefix = bwrap_argv(
            bwrap,
            source=cwd,
            home=home,
            uid=uid,
            gid=gid,
            passwd_fd=passwd_fd,
            group_fd=group_fd,
            tmp_size=limits.file_size_bytes,
            proxy_socket=proxy.path if proxy else None,
        )
        _execute(
            argv,
            cwd=cwd,
            env=sandbox_environment(proxy_port=PROXY_PORT if proxy else None),
            identity=identity,
            interpreter=interpreter,
            limits=limits,
            timeout=timeout,
            output_limit=output_limit,
            on_output=on_output,
            prefix=prefix,
            pass_fds=(passwd_fd, group_fd),
            relay=(PROXY_PORT, PROXY_SOCKET) if proxy else None,
            # bwrap's own two processes (its monitor and the sandbox's init) run as the build's uid,
            # and so does the relay.
            own_tasks=3 if proxy else 2,
        )


@contextlib.contextmanager
def _data_pipe(data: bytes) -> Iterator[int]:
    """The read end of a pipe that holds `data` (small: it must fit the pipe's buffer)."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
    finally:
        os.close(write_fd)
    try:
        yield read_fd
    finally:
        os.close(read_fd)


def _run_unsandboxed(
    argv: list[str],
    *,
    cwd: Path,
    timeout: int,
    output_limit: int,
    on_output: Callable[[str], None],
    limits: BuildLimits,
) -> None:
    identity = _resolve_user(limits.user)
    env = build_environment(cwd)
    if identity is not None:
        _hand_over(cwd, Path(env["HOME"]), identity)
    elif os.geteuid() != 0:
        make_non_dumpable()
    _execute(
        argv,
        cwd=cwd,
        env=env,
        identity=identity,
        interpreter=_wrapper_interpreter(identity, env["PATH"]),
        limits=limits,
        timeout=timeout,
        output_limit=output_limit,
        on_output=on_output,
    )


def _execute(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    identity: _Identity | None,
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
    plan = _rlimit_plan(limits, nproc)
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
    proc = subprocess.Popen(
        [*prefix, *_wrapped(argv, plan, interpreter, relay)],
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
    stdout = cast(IO[bytes], proc.stdout)  # stdout=PIPE guarantees a stream
    try:
        reader = _OutputReader(
            stdout.fileno(),
            log_limit=output_limit,
            stop_limit=limits.output_bytes,
            stop=lambda: _kill_group(proc),
            name=f"build-output-{proc.pid}",
        )
        reader.thread.start()
    except BaseException:
        # No build runs on unwatched ("can't start new thread" included).
        _kill_group(proc)
        proc.wait()
        raise
    started = time.monotonic()
    deadline = started + timeout
    next_count = started + PROCESS_CHECK_INTERVAL
    cpu_seconds = 0.0
    timed_out = process_limit_reached = False
    try:
        # Short sleeps, not one long wait: an asynchronous exception (a cancellation) is only raised
        # between bytecodes, never inside a blocking call.
        while True:
            reader.deliver(on_output)
            if (usage := _reap(proc)) is not None:
                cpu_seconds = usage
                break
            now = time.monotonic()
            if watch_processes and (now >= next_count or now >= deadline):
                next_count = now + PROCESS_CHECK_INTERVAL
                # A fork bomb that swallows its EAGAINs would otherwise spin silently until the timeout.
                if count_tasks(uid) >= nproc:
                    process_limit_reached = True
                    break
            if now >= deadline:
                timed_out = True
                break
            time.sleep(POLL_INTERVAL)
    except BaseException:
        _finish(proc, reader)
        raise
    # Also reaps what the command left running in the background, which would hold the pipe open.
    _finish(proc, reader)
    reader.deliver(on_output)
    outcome = BuildOutcome(
        returncode=cast(int, proc.returncode),
        cpu_seconds=cpu_seconds,
        tail=reader.tail(),
        timed_out=timed_out,
        output_exceeded=reader.exceeded,
        process_limit_reached=process_limit_reached,
    )
    error = _exec_failure(outcome, argv[0]) or classify_build(outcome, limits=limits, timeout=timeout)
    if error is not None:
        logger.info("Build %r failed: %s (%s)", argv, error.code, error.detail)
        raise error


def _finish(proc: subprocess.Popen[bytes], reader: _OutputReader) -> None:
    """Kill the build's process group, reap the command, and stop the output reader."""
    _kill_group(proc)
    proc.wait()
    reader.thread.join(READER_JOIN_TIMEOUT)
    if reader.thread.is_alive():
        logger.warning("Build output reader still running: a process left the build's process group")
    elif proc.stdout is not None:
        proc.stdout.close()
