"""Build step: run the project's build command in its checkout, inside resource limits.

The command runs without a shell, in its own process group (so a timeout, a limit or a cancellation
kills everything it started), with a scrubbed environment that carries none of the worker's secrets,
and under rlimits for CPU time, address space, file size and process count. Its output is capped:
past `BuildLimits.output_bytes` the build is stopped.

Sandboxed (publishing/pipeline/sandbox.py, the default where bwrap is installed, and required in
production), the build runs in namespaces of its own, as a uid no other running build has, and
every process of it ends with it. Unsandboxed, a root worker runs it as `PUBLISHING_BUILD_USER`:
root ignores RLIMIT_NPROC, and only another user is kept away from the worker's files.

The step's parts, one module each: build_limits.py (what a build may use, and naming how it ended),
build_user.py (who runs it, and what that user is handed), build_command.py (the exec wrapper that
sets the limits, and the run), processes.py (the wait: output, timeout, cancellation, the group's end).
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from publishing.exceptions import PermanentJobError
from publishing.hygiene import make_non_dumpable
from publishing.pipeline.build_command import ORDERED_OUTPUT_ENVIRONMENT, execute
from publishing.pipeline.build_limits import BuildLimits
from publishing.pipeline.build_proxy import PROXY_PORT, BuildProxy
from publishing.pipeline.build_user import Identity, hand_over, resolve_user, wrapper_interpreter
from publishing.pipeline.sandbox import (
    PROXY_SOCKET,
    SandboxPolicy,
    bwrap_argv,
    identity_files,
)
from publishing.pipeline.sandbox import (
    environment as sandbox_environment,
)
from publishing.pipeline.sandbox import (
    interpreter as sandbox_interpreter,
)
from publishing.pipeline.sandbox_uids import lease_uid


def build_environment(workdir: Path) -> dict[str, str]:
    """A build's whole environment: PATH, a private HOME/TMPDIR beside `workdir`, its output unbuffered,
    nothing else."""
    home = workdir.parent / "home"
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "CI": "true",
        **ORDERED_OUTPUT_ENVIRONMENT,
    }


def run_build(
    command: str,
    *,
    cwd: Path,
    timeout: int,
    output_limit: int,
    on_output: Callable[[str], None],
    limits: BuildLimits | None = None,
    sandbox: SandboxPolicy | None = None,
    variables: Mapping[str, str] | None = None,
) -> None:
    """Run `command` in `cwd` within `limits` and `sandbox` (default: the settings), with `variables`
    added to its environment; stream at most `output_limit` bytes of its output to `on_output`.

    Raises PermanentJobError: BUILD_COMMAND_INVALID, BUILD_USER_INVALID, SANDBOX_UNAVAILABLE,
    BUILD_TIMEOUT, BUILD_OUTPUT_LIMIT, BUILD_PROCESS_LIMIT, BUILD_CPU_LIMIT, BUILD_FILE_LIMIT,
    BUILD_MEMORY_LIMIT or BUILD_FAILED; TransientJobError SANDBOX_BUSY. Whatever ends the wait
    (success, failure, a limit, an exception in this thread), no process of the build survives it.
    `on_output` is called from the calling thread only.
    """
    limits = limits if limits is not None else BuildLimits.from_settings()
    sandbox = sandbox if sandbox is not None else SandboxPolicy.from_settings()
    argv = _parse(command)
    bwrap = sandbox.bwrap()
    extra = dict(variables or {})
    if bwrap is None:
        _run_unsandboxed(
            argv,
            cwd=cwd,
            timeout=timeout,
            output_limit=output_limit,
            on_output=on_output,
            limits=limits,
            variables=extra,
        )
        return
    _run_sandboxed(
        argv,
        bwrap,
        sandbox,
        cwd=cwd,
        timeout=timeout,
        output_limit=output_limit,
        on_output=on_output,
        limits=limits,
        variables=extra,
    )


def _parse(command: str) -> list[str]:
    """The build command's argv; PermanentJobError BUILD_COMMAND_INVALID if it has none."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise PermanentJobError(
            f"build command cannot be parsed: {exc}", code="BUILD_COMMAND_INVALID"
        ) from exc
    if not argv:
        raise PermanentJobError("build command is empty", code="BUILD_COMMAND_INVALID")
    return argv


def _run_sandboxed(
    argv: list[str],
    bwrap: str,
    sandbox: SandboxPolicy,
    *,
    cwd: Path,
    timeout: int,
    output_limit: int,
    on_output: Callable[[str], None],
    limits: BuildLimits,
    variables: dict[str, str],
) -> None:
    home = cwd.parent / "home"
    home.mkdir(exist_ok=True)
    interpreter = sandbox_interpreter()
    with contextlib.ExitStack() as stack:
        identity = _sandbox_identity(stack, sandbox, cwd, home)
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
        execute(
            argv,
            cwd=cwd,
            env={**sandbox_environment(proxy_port=PROXY_PORT if proxy else None), **variables},
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


def _sandbox_identity(
    stack: contextlib.ExitStack, sandbox: SandboxPolicy, cwd: Path, home: Path
) -> Identity | None:
    """A root worker's build: a uid leased for as long as `stack` lasts, handed its checkout and HOME.
    Otherwise None (the worker's own uid), and the worker made non-dumpable."""
    if os.geteuid() != 0:
        make_non_dumpable()
        return None
    uid = stack.enter_context(lease_uid(sandbox.uids))
    identity = Identity(uid=uid, gid=uid, name=f"uid {uid}")
    hand_over(cwd, home, identity)
    return identity


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
    variables: dict[str, str],
) -> None:
    identity = resolve_user(limits.user)
    env = {**build_environment(cwd), **variables}
    if identity is not None:
        hand_over(cwd, Path(env["HOME"]), identity)
    elif os.geteuid() != 0:
        make_non_dumpable()
    execute(
        argv,
        cwd=cwd,
        env=env,
        identity=identity,
        interpreter=wrapper_interpreter(identity, env["PATH"]),
        limits=limits,
        timeout=timeout,
        output_limit=output_limit,
        on_output=on_output,
    )
