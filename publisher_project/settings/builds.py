"""Builds: the sandbox (publishing/pipeline/sandbox.py, docs/security.md), its uids, limits and workspace."""

from __future__ import annotations

from .validation import parse_uid_range, read_bool, read_int, read_parsed, read_str

__all__ = [
    "PUBLISHING_ALLOW_USER_BUILD_COMMANDS",
    "PUBLISHING_BUILD_CPU_LIMIT",
    "PUBLISHING_BUILD_FILE_SIZE_LIMIT",
    "PUBLISHING_BUILD_MEMORY_LIMIT",
    "PUBLISHING_BUILD_NETWORK",
    "PUBLISHING_BUILD_OUTPUT_LIMIT",
    "PUBLISHING_BUILD_PROCESS_LIMIT",
    "PUBLISHING_BUILD_SANDBOX",
    "PUBLISHING_BUILD_TIMEOUT",
    "PUBLISHING_BUILD_USER",
    "PUBLISHING_SANDBOX_UIDS",
    "PUBLISHING_WORKSPACE_DIR",
]

# Lets every owner set a build command; otherwise only holders of the set_build_command permission.
PUBLISHING_ALLOW_USER_BUILD_COMMANDS: bool = read_bool("PUBLISHING_ALLOW_USER_BUILD_COMMANDS", False)
# Seconds the build step may take.
PUBLISHING_BUILD_TIMEOUT: int = read_int("PUBLISHING_BUILD_TIMEOUT", 900)
# Where each attempt's checkout lives; empty: <temp>/publisher-<uid> (never under VAR_DIR).
PUBLISHING_WORKSPACE_DIR: str = read_str("PUBLISHING_WORKSPACE_DIR", "")

# Each build runs in bubblewrap namespaces, seeing only the system's /usr, a few files of /etc and its
# own checkout. required (also empty, the default): builds fail (SANDBOX_UNAVAILABLE) where bwrap is
# missing; auto: sandboxed where bwrap is on PATH, else unsandboxed with a warning at worker start (the
# local and test settings' default); off: never sandboxed (refused by the production settings).
PUBLISHING_BUILD_SANDBOX: str = read_str(
    "PUBLISHING_BUILD_SANDBOX", "", choices=("", "required", "auto", "off")
)
# What a sandboxed build may reach. none: nothing, not even this host (an empty network namespace);
# public: public addresses only, through an HTTP proxy (HTTP_PROXY/HTTPS_PROXY) that judges every
# connection as the service's own outbound HTTP does (never loopback, private, link-local, ...).
PUBLISHING_BUILD_NETWORK: str = read_str("PUBLISHING_BUILD_NETWORK", "none", choices=("none", "public"))
# The uids a root worker runs sandboxed builds as, one per build running on the host at a time:
# uids that no account uses (any range works; it bounds how many builds one host runs at once).
PUBLISHING_SANDBOX_UIDS: range = read_parsed(
    "PUBLISHING_SANDBOX_UIDS", "60000-60999", parse_uid_range, "FIRST-LAST, uids above 0 that no account uses"
)

# Limits of every build, sandboxed or not (publishing/pipeline/build_limits.py); 0 is no limit, and a negative
# one is refused (it would stop every build at once or, for processes, forbid every fork).
# Who runs unsandboxed builds (sandboxed ones take a uid of PUBLISHING_SANDBOX_UIDS): a user name
# or uid, which a root worker switches to; "worker", the worker's own user whoever it is; empty
# (the default), the worker's own user, except that a root worker refuses to build
# (BUILD_USER_INVALID): as root the process limit does not hold and a build could read the
# worker's secrets, so that takes an explicit "worker".
PUBLISHING_BUILD_USER: str = read_str("PUBLISHING_BUILD_USER", "")
# CPU seconds per process, all its threads: with the 900 s timeout a process may keep two cores busy.
PUBLISHING_BUILD_CPU_LIMIT: int = read_int("PUBLISHING_BUILD_CPU_LIMIT", 1800)
# Address space per process (RLIMIT_AS), which runtimes reserve generously: not resident memory.
PUBLISHING_BUILD_MEMORY_LIMIT: int = read_int("PUBLISHING_BUILD_MEMORY_LIMIT", 4 * 1024**3)
# The largest file a build may write, in bytes.
PUBLISHING_BUILD_FILE_SIZE_LIMIT: int = read_int("PUBLISHING_BUILD_FILE_SIZE_LIMIT", 2 * 1024**3)
# Processes and threads a build may add to what its user already runs.
PUBLISHING_BUILD_PROCESS_LIMIT: int = read_int("PUBLISHING_BUILD_PROCESS_LIMIT", 512)
# stdout and stderr together; a build writing more is stopped (the log keeps PUBLISHING_LOG_LIMIT).
PUBLISHING_BUILD_OUTPUT_LIMIT: int = read_int("PUBLISHING_BUILD_OUTPUT_LIMIT", 16 * 1024**2)
