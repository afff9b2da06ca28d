"""Checkout step: a shallow `git clone` of one branch or tag of a user-supplied repository.

The URL and ref are user input, so both are checked before git sees them, and git runs without a
shell, without the worker's configuration or credentials, and with only the transports we allow.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from publishing.exceptions import JobError, PermanentJobError, TransientJobError
from publishing.pipeline.base import Commit
from publishing.pipeline.commits import fetch_commit, parse_commit, read_commit, validate_ref
from publishing.pipeline.network import check_host, has_control_or_space, split_url
from publishing.pipeline.processes import RedactedLines, supervise, with_output_tail
from publishing.redaction import redact_credentials

logger = logging.getLogger(__name__)

NETWORK_SCHEMES = frozenset({"https", "http", "ssh", "git"})
# A PATH that holds git and ssh on any ordinary system; the worker's own PATH is not passed on.
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# How much of git's stderr reaches the job's log: git writes a few lines (no progress: its stderr is
# no terminal); a server's `remote:` messages past this are cut.
GIT_LOG_LIMIT = 16 * 1024
# git configuration for its messages: a tag's checkout would otherwise add 15 lines of advice to the log.
QUIET_CONFIG = (("advice.detachedHead", "false"),)
# git's first line, which names the worker's folder it clones into: no cause of a failure, so no
# part of its detail (the job's log keeps it).
_CLONING_RE = re.compile(r"^Cloning into .*\n?", re.MULTILINE)
# How often the waiting thread wakes while the command runs (its exit and the timeout wake it at
# once): this bounds how late an async exception acts and output reaches the log.
POLL_INTERVAL = 0.2

_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
# git's `<transport>::<address>` remote-helper syntax (`ext::sh -c ...`, `fd::3`) runs arbitrary helpers.
_HELPER_RE = re.compile(r"^[A-Za-z0-9+.-]+::")
_SCP_RE = re.compile(r"^(?P<user>[^@/:\s]+)@(?P<host>\[[^\]/]+\]|[^@/:\[\]]+):(?P<path>.*)$")
_TRANSIENT_MARKERS = (
    "could not resolve host",
    "temporary failure in name resolution",
    "connection refused",
    "connection timed out",
    "operation timed out",
    "connection reset",
    "failed to connect to",
    "network is unreachable",
    "no route to host",
    "early eof",
    "rpc failed",
    "the requested url returned error: 5",
)


@dataclass(frozen=True)
class _Remote:
    """A network source as checked: git must then connect to `addresses` and nowhere else."""

    scheme: str  # "https", "http", "ssh" or "git"; the scp-like `user@host:path` is ssh
    host: str
    port: int | None
    # Empty when private hosts are allowed or nothing was resolved: git then resolves by itself.
    addresses: tuple[str, ...]


def _validate(url: str, *, allow_local: bool, allow_private: bool, resolve: bool) -> _Remote | None:
    """Raise SOURCE_INVALID for a URL form git should never see, SOURCE_NOT_ALLOWED for a refused one.

    Returns the network remote with the addresses judged, or None for a local repository.
    """
    if not url or url.startswith("-") or has_control_or_space(url):
        raise PermanentJobError(
            "repository URL is empty or contains forbidden characters", code="SOURCE_INVALID"
        )
    if _HELPER_RE.match(url):
        raise PermanentJobError(
            "git remote-helper URLs (`transport::address`) are not allowed", code="SOURCE_INVALID"
        )
    if url.startswith("/"):
        if not allow_local:
            raise PermanentJobError("local repository paths are not allowed", code="SOURCE_NOT_ALLOWED")
        return None
    if scheme_match := _SCHEME_RE.match(url):
        return _validate_url(url, scheme_match["scheme"].lower(), allow_local, allow_private, resolve)
    if scp_match := _SCP_RE.match(url):
        return _validate_scp(scp_match, allow_private, resolve)
    raise PermanentJobError("unrecognised repository URL", code="SOURCE_INVALID")


def _validate_url(
    url: str, scheme: str, allow_local: bool, allow_private: bool, resolve: bool
) -> _Remote | None:
    """`scheme://...`: file:// (local, when allowed) or one of the network schemes."""
    parts = split_url(url, what="repository URL", code="SOURCE_INVALID")
    if scheme == "file":
        if not allow_local:
            raise PermanentJobError("file:// repositories are not allowed", code="SOURCE_NOT_ALLOWED")
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise PermanentJobError("a file:// URL must name an absolute local path", code="SOURCE_INVALID")
        return None
    if scheme not in NETWORK_SCHEMES:
        raise PermanentJobError(f"unsupported repository URL scheme {scheme!r}", code="SOURCE_INVALID")
    host = parts.hostname or ""
    # A leading dash would reach ssh as an option (CVE-2017-1000117 and friends).
    if not host or host.startswith("-") or (parts.username or "").startswith("-"):
        raise PermanentJobError("repository URL has no valid host", code="SOURCE_INVALID")
    addresses = check_host(host, allow_private=allow_private, code="SOURCE_NOT_ALLOWED", resolve=resolve)
    return _Remote(scheme=scheme, host=host, port=parts.port, addresses=addresses)


def _validate_scp(match: re.Match[str], allow_private: bool, resolve: bool) -> _Remote:
    """git's scp-like `user@host:path`, which is ssh."""
    host = match["host"].strip("[]")
    if not host or host.startswith("-") or match["user"].startswith("-"):
        raise PermanentJobError("repository URL has no valid host", code="SOURCE_INVALID")
    if ":" in host and not _is_literal(host):
        # git's `user@[host:port]:path`: the port would reach the resolver as part of the name.
        raise PermanentJobError(
            "write a repository with a port as ssh://user@host:port/path", code="SOURCE_INVALID"
        )
    addresses = check_host(host, allow_private=allow_private, code="SOURCE_NOT_ALLOWED", resolve=resolve)
    return _Remote(scheme="ssh", host=host, port=None, addresses=addresses)


def validate_source_url(url: str, *, allow_local: bool, allow_private: bool) -> None:
    """Check a repository URL's syntax and policy without touching the network; raise PermanentJobError."""
    _validate(url, allow_local=allow_local, allow_private=allow_private, resolve=False)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _pinned(remote: _Remote | None, url: str) -> tuple[list[str], str, str]:
    """git options, clone URL and ssh command under which git connects to the checked addresses only.

    Without this, git would resolve the name again and could reach another address than the one
    judged (DNS rebinding). https/http: curl's resolve table; ssh: its HostName; git://: the URL
    itself names the address (the git daemon then sees the address as its virtual host).
    """
    ssh = "ssh -o BatchMode=yes"
    if remote is None or not remote.addresses or _is_literal(remote.host):
        return [], url, ssh
    if remote.scheme in ("http", "https"):
        port = remote.port or (443 if remote.scheme == "https" else 80)
        table = ",".join(_bracketed(address) for address in remote.addresses)
        return ["-c", f"http.curloptResolve={remote.host}:{port}:{table}"], url, ssh
    if remote.scheme == "ssh":
        # HostKeyAlias: the host key is still looked up under the name, not the address.
        # git runs GIT_SSH_COMMAND through a shell: the host is quoted.
        options = f"-o HostName={shlex.quote(remote.addresses[0])} -o HostKeyAlias={shlex.quote(remote.host)}"
        return [], url, f"{ssh} {options}"
    parts = urlsplit(url)
    netloc = _bracketed(remote.addresses[0]) + (f":{remote.port}" if remote.port else "")
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return [], urlunsplit(parts._replace(netloc=netloc)), ssh


def _git_environment(
    home: Path, *, allow_local: bool, ssh_command: str, config: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    path = SAFE_PATH
    git = shutil.which("git")
    if git and str(Path(git).parent) not in path.split(":"):
        path = f"{Path(git).parent}:{path}"
    # GIT_CONFIG_KEY_n/VALUE_n: configuration only this git process sees, readable only by its uid
    # (unlike `-c`, which any user reads in /proc/<pid>/cmdline).
    entries = [*QUIET_CONFIG, *config]
    configured = {"GIT_CONFIG_COUNT": str(len(entries))}
    for index, (key, value) in enumerate(entries):
        configured[f"GIT_CONFIG_KEY_{index}"] = key
        configured[f"GIT_CONFIG_VALUE_{index}"] = value
    return {
        **configured,
        "PATH": path,
        # An empty HOME hides the worker's ~/.gitconfig, credential helpers and ssh keys.
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "https:http:ssh:git" + (":file" if allow_local else ""),
        # Never wait for a host-key or passphrase prompt nobody will answer.
        "GIT_SSH_COMMAND": ssh_command,
        # English messages: the failure classification below matches on them.
        "LANG": "C",
        "LC_ALL": "C",
    }


# git failing to write into the worker's own workspace: a full disk or quota (git names the cause
# only for some writes: "unable to write file X" says none), and room comes back as other attempts'
# workspaces go, so a retry later may succeed.
_NO_SPACE_MARKERS = ("no space left on device", "disk quota exceeded", "unable to write file", "write error")


def _is_transient(stderr: str) -> bool:
    lowered = stderr.lower()
    if any(marker in lowered for marker in _TRANSIENT_MARKERS):
        return True
    # e.g. "unable to access '...': Failed to connect ... timed out" or "... returned error: 503".
    return bool(re.search(r"unable to access .*(timed out|error: 5\d\d)", lowered))


def _without_credentials(remote: _Remote | None, url: str) -> tuple[str, list[tuple[str, str]]]:
    """`url` without its user-info secrets, and the git configuration that hands them to git instead.

    git writes the clone URL into `.git/config` of the checkout, where the build (and an artifact of
    `.git`) would read it. http(s): user and password become the Basic authorization curl would
    have sent. ssh and git://: a password is never used by them and is dropped; an ssh user stays.
    """
    if remote is None or "@" not in url:
        return url, []
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, []  # the scp-like user@host:path: a user name, no secret
    host = parts.netloc.rpartition("@")[2]
    if remote.scheme in ("http", "https"):
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        token = base64.b64encode(pair.encode()).decode("ascii")
        return urlunsplit(parts._replace(netloc=host)), [
            ("http.extraHeader", f"Authorization: Basic {token}")
        ]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host)), []


def checkout(
    url: str,
    ref: str,
    *,
    dest: Path,
    timeout: int,
    allow_local: bool,
    allow_private: bool,
    on_output: Callable[[str], None],
    commit: str = "",
) -> Path:
    """Shallow-clone branch or tag `ref` of `url` into `dest` and return `dest`; raise a JobError on failure.

    With `commit` (a full commit id or a tag in the history of `ref`), that commit rather than the ref's
    head (`commits.fetch_commit`). `dest` must not exist or be empty; on failure anything this call
    created there is removed. Credentials in `url` reach git through its environment, never a file of
    the checkout. git's messages reach `on_output` (from the calling thread) line by line, credentials
    redacted, and a failure's detail ends with their last lines.
    """
    remote = _validate(url, allow_local=allow_local, allow_private=allow_private, resolve=True)
    validate_ref(ref)
    # Checked where it was given, and again here: git never sees it unchecked.
    commit = parse_commit(commit) if commit else ""
    bare_url, secret_config = _without_credentials(remote, url)
    pins, clone_url, ssh_command = _pinned(remote, bare_url)
    if url.startswith("/"):
        # `--depth` is ignored for plain local paths; a file:// URL makes git honour it.
        clone_url = Path(url).as_uri()
    safe_url = redact_credentials(url)
    created = not dest.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    git = _git_command(pins, allow_private=allow_private)
    logger.info("Cloning %s at %s into %s", safe_url, f"{ref} {commit}".strip(), dest)
    try:
        with tempfile.TemporaryDirectory(prefix="git-home-", dir=dest.parent) as home:
            env = _git_environment(
                Path(home), allow_local=allow_local, ssh_command=ssh_command, config=secret_config
            )

            def run(args: Sequence[str]) -> tuple[int, str]:
                return _run_git([*git, *args], env=env, timeout=timeout, on_output=on_output)

            returncode, stderr = (
                fetch_commit(run, url=clone_url, ref=ref, commit=commit, dest=dest)
                if commit
                else run(_clone_args(ref, clone_url, dest))
            )
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    if returncode != 0:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise _clone_error(stderr, returncode=returncode, safe_url=safe_url, ref=ref)
    return dest


def _clone_args(ref: str, url: str, dest: Path) -> list[str]:
    """A shallow clone of the branch or tag `ref`; --quiet: git's errors only, not "Cloning into
    '<the worker's folder>'" in the user's log."""
    return ["clone", "--quiet", "--depth", "1", "--single-branch", "--branch", ref, "--", url, str(dest)]


def _clone_error(stderr: str, *, returncode: int, safe_url: str, ref: str) -> JobError:
    """What a failed clone or fetch means: transient (the network, a full disk) or not, with git's last
    words."""
    if any(marker in stderr.lower() for marker in _NO_SPACE_MARKERS):
        detail = with_output_tail("could not write the checkout (a full disk?)", _CLONING_RE.sub("", stderr))
        logger.warning("git clone of %s at %s ran out of space: %s", safe_url, ref, detail)
        return TransientJobError(detail, code="CHECKOUT_NO_SPACE")
    transient = _is_transient(stderr)
    detail = with_output_tail(
        "repository unavailable" if transient else "git clone failed", _CLONING_RE.sub("", stderr)
    )
    logger.warning("git clone of %s at %s exited with %s: %s", safe_url, ref, returncode, detail)
    if transient:
        return TransientJobError(detail, code="CHECKOUT_UNAVAILABLE")
    return PermanentJobError(detail, code="CHECKOUT_FAILED")


def _git_command(pins: list[str], *, allow_private: bool) -> list[str]:
    """`git` and the options every command of a checkout runs with."""
    return [
        "git",
        "-c",
        "protocol.ext.allow=never",
        # A redirect would lead to a host nobody checked.
        *(["-c", "http.followRedirects=false"] if not allow_private else []),
        *pins,
    ]


def _ignore(text: str) -> None:
    """Where git's messages go while it only reads the checkout (they say nothing a reader needs)."""


def head_commit(source: Path, *, timeout: int) -> Commit:
    """The commit checked out at `source`, as git reads it there; PermanentJobError if it cannot be read."""
    with tempfile.TemporaryDirectory(prefix="git-home-", dir=source.parent) as home:
        env = _git_environment(Path(home), allow_local=False, ssh_command="ssh -o BatchMode=yes")
        return read_commit(
            lambda args: _run_git(["git", *args], env=env, timeout=timeout, on_output=_ignore),
            source,
            scratch=Path(home),
        )


def _run_git(
    argv: list[str], *, env: dict[str, str], timeout: int, on_output: Callable[[str], None]
) -> tuple[int, str]:
    """Run git in its own process group; return (exit status, the end of its stderr). Kill the group on
    timeout or error.

    Its stderr (all git writes: its stdout is empty) reaches `on_output` as it comes, line by line
    with credentials redacted, up to GIT_LOG_LIMIT bytes.
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise PermanentJobError(f"git could not be started: {exc}", code="CHECKOUT_FAILED") from exc
    # git's own messages carry no credentials (they reach git through its environment); redacted
    # all the same, as everything a user is shown.
    lines = RedactedLines(on_output)
    # git-remote-https and ssh are grandchildren: the wait ends with the whole group, not only git.
    ending = supervise(
        proc,
        cast(IO[bytes], proc.stderr),  # stderr=PIPE guarantees a stream
        timeout=timeout,
        poll_interval=POLL_INTERVAL,
        on_output=lines,
        log_limit=GIT_LOG_LIMIT,
        label="git",
    )
    lines.close()
    if ending.timed_out:
        raise TransientJobError(
            with_output_tail(f"git clone exceeded {timeout} s", _CLONING_RE.sub("", ending.tail)),
            code="CHECKOUT_TIMEOUT",
        )
    return ending.returncode, ending.tail
