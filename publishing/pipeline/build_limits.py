"""A build's limits: what one build may use, how they become rlimits, and how a build that ended is named.

`BuildLimits` comes from the settings; `rlimit_plan` turns it into what the exec wrapper
(build_command.py) sets; `classify_build` is the one place that names a build's failure (and ends
its detail with the build's last output lines).
"""

from __future__ import annotations

import contextlib
import resource
import signal
from dataclasses import dataclass

from django.conf import settings

from publishing.exceptions import PermanentJobError
from publishing.pipeline.processes import Ending, with_output_tail
from publishing.pipeline.sandbox_uids import processes_by_uid

# After SIGXCPU at the soft CPU limit, a process that ignores it gets SIGKILL this much later.
CPU_KILL_GRACE = 5

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
class BuildOutcome(Ending):
    """How a build ended: how the wait for its command ended, and whether the build hit its process
    limit (what stopped the wait, if anything did); `classify_build` names it."""

    process_limit_reached: bool = False


def count_tasks(uid: int) -> int:
    """Tasks (processes and threads) of real uid `uid` that /proc shows: what RLIMIT_NPROC counts."""
    return sum(threads for _, threads in processes_by_uid().get(uid, ()) if threads > 0)


def rlimit_plan(limits: BuildLimits, nproc: int) -> list[tuple[int, int, int]]:
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
    """The error a build ended with, or None if it succeeded: the one place that names build failures.

    Its detail ends with the last lines of the build's output, where the cause usually is.
    """
    named = _name_failure(outcome, limits=limits, timeout=timeout)
    if named is None:
        return None
    code, detail = named
    return PermanentJobError(with_output_tail(detail, outcome.tail), code=code)


def _name_failure(outcome: BuildOutcome, *, limits: BuildLimits, timeout: int) -> tuple[str, str] | None:
    """(code, detail) of a build that failed, None for one that succeeded."""
    if outcome.output_exceeded:
        return (
            "BUILD_OUTPUT_LIMIT",
            f"build output exceeded {_size(limits.output_bytes)}; the build was stopped",
        )
    if outcome.process_limit_reached:
        return (
            "BUILD_PROCESS_LIMIT",
            f"build reached its limit of {limits.processes} more processes and threads and was stopped",
        )
    if outcome.timed_out:
        return "BUILD_TIMEOUT", f"build exceeded {timeout} s"
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
        return (
            "BUILD_CPU_LIMIT",
            f"build used more than {limits.cpu_seconds} s of CPU time in one process ({status})",
        )
    if limits.file_size_bytes and (signum == signal.SIGXFSZ or "file too large" in tail):
        return (
            "BUILD_FILE_LIMIT",
            f"build wrote a file larger than {_size(limits.file_size_bytes)} ({status})",
        )
    if limits.memory_bytes and any(marker in tail for marker in _MEMORY_MARKERS):
        return (
            "BUILD_MEMORY_LIMIT",
            f"build ran out of memory (limit {_size(limits.memory_bytes)} of address space; {status})",
        )
    if limits.processes and any(marker in tail for marker in _PROCESS_MARKERS):
        return (
            "BUILD_PROCESS_LIMIT",
            f"build could not start more processes or threads (limit {limits.processes}; {status})",
        )
    return "BUILD_FAILED", status
