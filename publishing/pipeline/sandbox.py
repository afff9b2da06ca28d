"""The build sandbox: bubblewrap namespaces around each build, and a uid of its own for each.

A sandboxed build sees a read-only system (`/usr` and the few files of `/etc` that programs need
to run and to trust TLS), its own `/proc`, `/dev`, `/tmp` and hostname, and two writable folders:
its checkout at `/build/source` and its HOME at `/build/home`. Nothing of the service is mounted:
no `VAR_DIR`, database, store, project code or other workspace, and no other process is visible.
Its network namespace is empty: only its own loopback. With `public` network a relay on that
loopback leads to the build proxy (build_proxy.py), which connects to public addresses only.

The sandbox's init process dies with the worker thread that started it (`--die-with-parent`, also
on SIGKILL) and takes every process of the build with it: a PID namespace ends when its init does,
whatever `setsid` or double forks the build tried.

A root worker runs each build as a uid from `PUBLISHING_SANDBOX_UIDS` that no other build on the
host holds meanwhile (sandbox_uids.py); a worker of any other user runs builds as itself, still each
in its own namespaces.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from publishing.exceptions import PermanentJobError
from publishing.pipeline.build_command import ORDERED_OUTPUT_ENVIRONMENT

logger = logging.getLogger(__name__)

# Where a build finds its checkout and its HOME inside the sandbox: fixed, so that paths a build
# writes into its output are the same for every publishing of a commit.
SOURCE_DIR = "/build/source"
HOME_DIR = "/build/home"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOSTNAME = "publisher-build"
# Where a build with `public` network finds the build proxy's socket (its relay connects to it).
PROXY_SOCKET = "/run/publisher/proxy.sock"
# The top-level entries that are links into /usr on a merged-/usr system, or folders of their own.
SYSTEM_ROOTS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What of the host's /etc a build sees: name resolution, TLS trust, the dynamic linker's cache,
# Debian's alternatives, time zone, MIME types. Never passwd/shadow (a synthetic one is written).
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "gai.conf",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
)


@dataclass(frozen=True)
class SandboxPolicy:
    """Whether and how builds are sandboxed (PUBLISHING_BUILD_SANDBOX, _NETWORK, PUBLISHING_SANDBOX_UIDS)."""

    # required: never build outside the sandbox; auto: sandbox when bwrap is found; off: never.
    mode: str = "auto"
    network: str = "none"
    # The uids a root worker hands to builds, one per running build on this host.
    uids: range = range(60000, 61000)

    @classmethod
    def from_settings(cls) -> SandboxPolicy:
        return cls(
            mode=settings.PUBLISHING_BUILD_SANDBOX or "required",
            network=settings.PUBLISHING_BUILD_NETWORK,
            uids=settings.PUBLISHING_SANDBOX_UIDS,
        )

    def bwrap(self) -> str | None:
        """The bwrap to run builds in; None to build unsandboxed; PermanentJobError if that is refused."""
        if self.mode == "off":
            return None
        found = shutil.which("bwrap")
        if found is None and self.mode == "required":
            raise PermanentJobError(
                "builds must run in the sandbox (PUBLISHING_BUILD_SANDBOX=required) and bwrap is not "
                "installed on this worker",
                code="SANDBOX_UNAVAILABLE",
            )
        return found


def describe(policy: SandboxPolicy) -> tuple[int, str]:
    """The log level and line a worker says at start about how it will build."""
    try:
        bwrap = policy.bwrap()
    except PermanentJobError:
        return logging.ERROR, (
            "Builds REFUSED: PUBLISHING_BUILD_SANDBOX=required and bwrap is not installed "
            "(apt-get install bubblewrap); every build fails with SANDBOX_UNAVAILABLE"
        )
    if bwrap is None:
        if policy.mode == "off":
            return logging.WARNING, (
                "Builds run WITHOUT a sandbox (PUBLISHING_BUILD_SANDBOX=off): a build can read what "
                "its user can read and reach every address this host reaches"
            )
        return logging.WARNING, (
            "Builds run WITHOUT a sandbox: bwrap is not installed (apt-get install bubblewrap); a "
            "build can read what its user can read and reach every address this host reaches"
        )
    who = (
        f"a uid of its own from {policy.uids.start}-{policy.uids.stop - 1}"
        if os.geteuid() == 0
        else f"this worker's uid {os.geteuid()}"
    )
    return logging.INFO, f"Builds run in the sandbox ({bwrap}), as {who}, network {policy.network}"


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in SYSTEM_ROOTS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--dir", "/etc"]
    for name in ETC_ENTRIES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def bwrap_argv(
    bwrap: str,
    *,
    source: Path,
    home: Path,
    uid: int,
    gid: int,
    passwd_fd: int,
    group_fd: int,
    tmp_size: int,
    proxy_socket: Path | None = None,
) -> list[str]:
    """bwrap's arguments for one build, up to and including the `--` before the command.

    `passwd_fd` and `group_fd` are read ends of pipes holding the sandbox's /etc/passwd and /etc/group;
    `proxy_socket`, the build proxy's socket for a build with `public` network.
    """
    return [
        bwrap,
        *_namespace_args(uid, gid),
        *_system_mounts(),
        *_identity_mounts(passwd_fd, group_fd),
        *_scratch_mounts(tmp_size),
        *_work_mounts(source, home, proxy_socket),
        # The root bwrap builds everything on is a tmpfs of the build's: read-only once it is built,
        # so that the checkout, HOME, /tmp and /dev/shm are the only places a build can write.
        "--remount-ro",
        "/",
        "--",
    ]


def _namespace_args(uid: int, gid: int) -> list[str]:
    return [
        # user, IPC, PID, network, UTS and cgroup namespaces; no nested user namespaces inside.
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(uid),
        "--gid",
        str(gid),
        "--hostname",
        HOSTNAME,
        "--die-with-parent",
        # A new session: the build cannot push input into a terminal of the worker (TIOCSTI).
        "--new-session",
        "--cap-drop",
        "ALL",
    ]


def _identity_mounts(passwd_fd: int, group_fd: int) -> list[str]:
    return [
        "--perms",
        "0644",
        "--ro-bind-data",
        str(passwd_fd),
        "/etc/passwd",
        "--perms",
        "0644",
        "--ro-bind-data",
        str(group_fd),
        "/etc/group",
    ]


def _scratch_mounts(tmp_size: int) -> list[str]:
    return [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        # Memory-backed: bounded like a file (RLIMIT_AS does not count tmpfs pages).
        *(["--size", str(tmp_size)] if tmp_size else []),
        "--tmpfs",
        "/dev/shm",  # noqa: S108 - the sandbox's own, empty
        *(["--size", str(tmp_size)] if tmp_size else []),
        "--tmpfs",
        "/tmp",  # noqa: S108 - the sandbox's own, empty
    ]


def _work_mounts(source: Path, home: Path, proxy_socket: Path | None) -> list[str]:
    return [
        *(["--bind", str(proxy_socket), PROXY_SOCKET] if proxy_socket else []),
        "--bind",
        str(home),
        HOME_DIR,
        "--bind",
        str(source),
        SOURCE_DIR,
        "--chdir",
        SOURCE_DIR,
    ]


def identity_files(uid: int, gid: int) -> tuple[bytes, bytes]:
    """/etc/passwd and /etc/group inside the sandbox: root, the build's own user, nobody."""
    passwd = (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"build:x:{uid}:{gid}:build:{HOME_DIR}:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\nbuild:x:{gid}:\nnogroup:x:65534:\n"
    return passwd.encode(), group.encode()


def environment(*, proxy_port: int | None = None) -> dict[str, str]:
    """A sandboxed build's whole environment, its output unbuffered; with `proxy_port`, the proxy that
    is its only way out."""
    proxy = f"http://127.0.0.1:{proxy_port}"
    proxies = {name: proxy for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    # A build's own servers (a site it serves to prerender) are on its own loopback, not the proxy's.
    proxies |= {name: "localhost,127.0.0.1,::1" for name in ("NO_PROXY", "no_proxy")}
    return {
        "PATH": SANDBOX_PATH,
        "HOME": HOME_DIR,
        "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own tmpfs
        "LANG": "C.UTF-8",
        "CI": "true",
        **ORDERED_OUTPUT_ENVIRONMENT,
        **(proxies if proxy_port else {}),
    }


def interpreter() -> str:
    """A python3 the sandbox can run (under /usr), for the wrapper that sets the build's limits."""
    for folder in SANDBOX_PATH.split(":"):
        candidate = os.path.join(folder, "python3")
        real = os.path.realpath(candidate)
        if os.path.isfile(real) and os.access(real, os.X_OK) and Path(real).is_relative_to("/usr"):
            return candidate
    raise PermanentJobError(
        "the sandbox has no python3 under /usr (install python3), and one sets the build's limits",
        code="SANDBOX_UNAVAILABLE",
    )
