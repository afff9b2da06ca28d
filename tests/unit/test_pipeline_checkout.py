"""Checkout step: URL and ref policy, and real clones of a local repository."""

from __future__ import annotations

import base64
import ctypes
import importlib
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline.base import Commit
from publishing.pipeline.checkout import checkout, head_commit, validate_source_url
from publishing.pipeline.commits import SUBJECT_LIMIT, validate_ref
from tests.fakes import http_server, resolver
from tests.support.polling import wait_until

# The package re-exports the step function under the module's name, hiding the module itself.
checkout_module = importlib.import_module("publishing.pipeline.checkout")


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A local repository with two commits on `main` and a tag `v1` on the first."""
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "index.html").write_text("<h1>v1</h1>")
    _git(path, "add", "index.html")
    _git(path, "commit", "-q", "-m", "first")
    _git(path, "tag", "v1")
    (path / "index.html").write_text("<h1>v2</h1>")
    _git(path, "commit", "-q", "-am", "second")
    return path


@pytest.fixture
def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A listening socket on a local port: connections are made (queued) and never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


@pytest.fixture
def silent_port(silent_server: socket.socket) -> int:
    """A local TCP port that accepts connections and never answers."""
    port: int = silent_server.getsockname()[1]
    return port


def connected_to(server: socket.socket) -> bool:
    """True once a client's connection waits on `server`."""
    readable, _, _ = select.select([server], [], [], 0)
    return bool(readable)


def _checkout(url: str, ref: str, dest: Path, **overrides: Any) -> Path:
    options: dict[str, Any] = {
        "timeout": 60,
        "allow_local": True,
        "allow_private": True,
        "on_output": lambda text: None,
        **overrides,
    }
    return checkout(url, ref, dest=dest, **options)


def test_checkout_clones_one_commit_of_the_branch_from_a_local_path(repo, tmp_path):
    # Given a workspace
    dest = tmp_path / "ws" / "source"

    # When
    result = _checkout(str(repo), "main", dest)

    # Then the branch's tip is checked out, shallowly
    assert result == dest
    assert (dest / "index.html").read_text() == "<h1>v2</h1>"
    assert _git(dest, "rev-list", "--count", "HEAD").strip() == "1"


def test_checkout_clones_a_tag_from_a_file_url(repo, tmp_path):
    # Given a file:// URL of the repository
    dest = tmp_path / "ws" / "source"

    # When
    _checkout(repo.as_uri(), "v1", dest)

    # Then the tagged content is checked out
    assert (dest / "index.html").read_text() == "<h1>v1</h1>"


def test_head_commit_is_what_git_checked_out_not_what_the_ref_is_called(repo, tmp_path):
    # Given a checkout of the tag v1, which names the first of two commits
    dest = _checkout(str(repo), "v1", tmp_path / "ws" / "source")

    # When
    commit = head_commit(dest, timeout=30)

    # Then it is the tagged commit, read from the checkout
    assert commit == Commit(
        sha=_git(repo, "rev-parse", "v1^{commit}").strip(), subject="first", author="t <t@t>"
    )
    assert commit.short == commit.sha[:12]
    # And git left nothing in the checkout
    assert sorted(p.name for p in dest.iterdir()) == [".git", "index.html"]


def test_head_commit_keeps_control_characters_out_and_caps_a_long_subject(repo, tmp_path):
    # Given a commit whose subject carries a terminal escape and runs on, by an author with a tab
    subject = "\x1b[31mred\x1b[0m " + "long " * 200
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=Eve\tX",
            "-c",
            "user.email=e@x",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            subject,
        ],
        cwd=repo,
        check=True,
    )
    dest = _checkout(str(repo), "main", tmp_path / "ws" / "source")

    # When
    commit = head_commit(dest, timeout=30)

    # Then no control character got through, and the subject is capped, saying so
    assert commit.subject.startswith("\ufffd[31mred\ufffd[0m long long")
    assert len(commit.subject) == SUBJECT_LIMIT
    assert commit.subject.endswith("…")
    assert commit.author == "Eve\ufffdX <e@x>"


def test_head_commit_of_a_folder_without_a_repository_fails_permanently(repo, tmp_path):
    # Given a folder inside a repository, itself no checkout
    inside = repo / "sub"
    inside.mkdir()

    # When / Then git does not look above it
    with pytest.raises(PermanentJobError) as excinfo:
        head_commit(inside, timeout=30)
    assert excinfo.value.code == "CHECKOUT_FAILED"


def test_checkout_of_a_missing_branch_fails_permanently_and_leaves_no_destination(repo, tmp_path):
    # Given a ref that does not exist
    dest = tmp_path / "ws" / "source"

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(str(repo), "no-such-branch", dest)

    # Then
    assert excinfo.value.code == "CHECKOUT_FAILED"
    assert "no-such-branch" in excinfo.value.detail
    assert not dest.exists()


def test_a_failed_checkout_into_a_folder_that_was_there_leaves_the_folder(repo, tmp_path):
    # Given an empty destination folder made by someone else
    dest = tmp_path / "ws" / "source"
    dest.mkdir(parents=True)

    # When the clone fails
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(str(repo), "no-such-branch", dest)

    # Then only what the checkout made is removed: the folder stays, empty
    assert excinfo.value.code == "CHECKOUT_FAILED"
    assert dest.is_dir()
    assert list(dest.iterdir()) == []


def test_checkout_of_a_directory_that_is_no_repository_fails_with_gits_words_in_the_log_and_detail(tmp_path):
    # Given an empty directory
    empty = tmp_path / "empty"
    empty.mkdir()
    log: list[str] = []

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(str(empty), "main", tmp_path / "ws" / "source", on_output=log.append)

    # Then git's error reached the job's log as it wrote it, and ends the detail, next to the status
    assert excinfo.value.code == "CHECKOUT_FAILED"
    refusal = f"fatal: '{empty}' does not appear to be a git repository"
    assert f"{refusal}\nfatal: Could not read from remote repository.\n" in "".join(log)
    assert excinfo.value.detail == (
        f"git clone failed: {refusal} | fatal: Could not read from remote repository. | "
        "Please make sure you have the correct access rights | and the repository exists."
    )


def test_checkout_of_a_tag_logs_git_without_its_detached_head_advice(repo, tmp_path):
    # Given a tag, which git checks out as a detached HEAD
    log: list[str] = []

    # When
    _checkout(repo.as_uri(), "v1", tmp_path / "ws" / "source", on_output=log.append)

    # Then the log has nothing of git's: neither the fifteen lines of its advice nor the worker's
    # folder it clones into
    assert "".join(log) == ""


@pytest.mark.parametrize("as_uri", [False, True])
def test_checkout_refuses_a_local_source_when_local_sources_are_not_allowed(repo, tmp_path, as_uri):
    # Given a local repository named by path or file:// URL
    url = repo.as_uri() if as_uri else str(repo)

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(url, "main", tmp_path / "ws" / "source", allow_local=False)
    assert excinfo.value.code == "SOURCE_NOT_ALLOWED"
    assert not (tmp_path / "ws" / "source").exists()


def test_checkout_refuses_an_ext_transport_url_before_running_anything(tmp_path, monkeypatch):
    # Given a URL that would make git run a command, and a Popen that must not be reached
    marker = tmp_path / "pwned"
    monkeypatch.setattr(checkout_module.subprocess, "Popen", _fail_if_called)

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(f"ext::sh -c touch% {marker}", "main", tmp_path / "source")
    assert excinfo.value.code == "SOURCE_INVALID"
    assert not marker.exists()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ext::sh -c id",
        "fd::3",
        "-uhttps://example.com/r.git",
        "https://example.com/r .git",
        "https://example.com/r\n.git",
        "relative/path",
        "./repo",
        "ftp://example.com/r.git",
        "file://fileserver/srv/r.git",
        "https:///r.git",
        "https://example.com:notaport/r.git",
        "ssh://-oProxyCommand=id/r.git",
        "git@-oProxyCommand=id:r.git",
    ],
)
def test_validate_source_url_refuses_malformed_or_dangerous_urls(url):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        validate_source_url(url, allow_local=True, allow_private=True)
    assert excinfo.value.code == "SOURCE_INVALID"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/r.git",
        "https://localhost/r.git",
        "http://[::1]:8080/r.git",
        "git://10.0.0.7/r.git",
        "ssh://git@192.168.0.2/r.git",
        "git@169.254.169.254:r.git",
    ],
)
def test_validate_source_url_refuses_private_and_loopback_hosts(url):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        validate_source_url(url, allow_local=False, allow_private=False)
    assert excinfo.value.code == "SOURCE_NOT_ALLOWED"


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/owner/repo.git",
        "http://git.example.com:8080/repo",
        "ssh://git@github.com/owner/repo.git",
        "git://git.example.com/repo.git",
        "git@github.com:owner/repo.git",
        "https://user:token@github.com/owner/repo.git",
    ],
)
def test_validate_source_url_accepts_public_network_urls_without_resolving(url, monkeypatch):
    # Given a resolver that must not be consulted
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)

    # When / Then no error is raised
    validate_source_url(url, allow_local=False, allow_private=False)


@pytest.mark.parametrize(
    "ref", ["", "--upload-pack=touch x", "-b", "main..evil", "has space", "a\tb", "x:y", "a~1"]
)
def test_validate_ref_refuses_option_like_and_malformed_refs(ref):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        validate_ref(ref)
    assert excinfo.value.code == "REF_INVALID"


def test_checkout_refuses_an_option_like_ref(repo, tmp_path, monkeypatch):
    # Given a Popen that must not be reached
    monkeypatch.setattr(checkout_module.subprocess, "Popen", _fail_if_called)

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(str(repo), "--upload-pack=touch /tmp/x", tmp_path / "source")
    assert excinfo.value.code == "REF_INVALID"


def test_checkout_runs_git_without_the_workers_environment(repo, tmp_path, monkeypatch):
    # Given secrets in the worker's environment and a Popen spy
    monkeypatch.setenv("SECRET_KEY", "worker-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/x")
    calls: list[dict[str, Any]] = []
    real_popen = subprocess.Popen

    def spy(argv: list[str], **kwargs: Any) -> Any:
        calls.append({"argv": argv, **kwargs})
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(checkout_module.subprocess, "Popen", spy)

    # When
    _checkout(str(repo), "main", tmp_path / "ws" / "source", allow_local=True)

    # Then git saw only its own settings, a throwaway HOME and no shell
    (call,) = calls
    env = call["env"]
    assert "SECRET_KEY" not in env
    assert "DATABASE_URL" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_ALLOW_PROTOCOL"] == "https:http:ssh:git:file"
    assert env["HOME"] != str(Path.home())
    assert not call.get("shell")
    assert call["argv"][:3] == ["git", "-c", "protocol.ext.allow=never"]
    assert call["argv"][-3:] == ["--", repo.as_uri(), str(tmp_path / "ws" / "source")]
    assert call["start_new_session"] is True


def test_checkout_reports_an_unreachable_server_as_transient_without_credentials(tmp_path, closed_port):
    # Given an HTTP URL with credentials on a port nothing listens on
    url = f"http://bob:s3cret@127.0.0.1:{closed_port}/r.git"
    log: list[str] = []

    # When
    with pytest.raises(TransientJobError) as excinfo:
        _checkout(url, "main", tmp_path / "ws" / "source", on_output=log.append)

    # Then git's refusal is in the detail and the log, the password in neither
    assert excinfo.value.code == "CHECKOUT_UNAVAILABLE"
    refusal = f"fatal: unable to access 'http://127.0.0.1:{closed_port}/r.git/': Failed to connect"
    assert excinfo.value.detail.startswith(f"repository unavailable: {refusal}")
    assert refusal in "".join(log)
    assert "s3cret" not in excinfo.value.detail + "".join(log)
    assert not (tmp_path / "ws" / "source").exists()


class Refusing(BaseHTTPRequestHandler):
    """A git host that refuses every request in words that repeat the URL it was asked with, its
    password included (git shows a text/plain error body as `remote:` lines)."""

    def do_GET(self) -> None:
        body = b"denied: http://bob:s3cret@git.example.com/r.git is not yours\nask its owner\n"
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_refusing_servers_words_reach_the_log_and_detail_with_credentials_redacted(tmp_path):
    # Given a server that refuses the clone, repeating a URL with the user's password
    log: list[str] = []

    # When a URL carrying that password is cloned from it
    with http_server(Refusing) as base_url:
        url = base_url.replace("http://", "http://bob:s3cret@") + "/r.git"
        with pytest.raises(PermanentJobError) as excinfo:
            _checkout(url, "main", tmp_path / "ws" / "source", on_output=log.append)

    # Then its words are in the log and the detail, the password in neither, in no form
    text = "".join(log)
    assert excinfo.value.code == "CHECKOUT_FAILED"
    assert "remote: denied: http://***@git.example.com/r.git is not yours\nremote: ask its owner\n" in text
    assert excinfo.value.detail == (
        "git clone failed: remote: denied: http://***@git.example.com/r.git is not yours | "
        "remote: ask its owner | "
        f"fatal: unable to access '{base_url}/r.git/': The requested URL returned error: 403"
    )
    for secret in ("s3cret", base64.b64encode(b"bob:s3cret").decode()):
        assert secret not in text + excinfo.value.detail


def test_checkout_times_out_against_a_silent_server_and_cleans_up(tmp_path, silent_port):
    # Given a server that accepts the connection and never answers
    dest = tmp_path / "ws" / "source"
    started = time.monotonic()

    # When
    with pytest.raises(TransientJobError) as excinfo:
        _checkout(f"http://127.0.0.1:{silent_port}/r.git", "main", dest, timeout=1)

    # Then the detail says so, without the one line git wrote (the folder it was cloning into)
    assert (excinfo.value.code, excinfo.value.detail) == ("CHECKOUT_TIMEOUT", "git clone exceeded 1 s")
    assert time.monotonic() - started < 10
    assert not dest.exists()


def test_checkout_stops_promptly_on_an_asynchronous_exception(tmp_path, silent_server, silent_port):
    # Given a clone hanging on a silent server in a worker thread
    class Cancelled(Exception):
        pass

    dest = tmp_path / "ws" / "source"
    errors: list[BaseException] = []

    def target() -> None:
        try:
            _checkout(f"http://127.0.0.1:{silent_port}/r.git", "main", dest, timeout=60)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    wait_until(lambda: connected_to(silent_server), 30, "git never connected to the server")

    # When the thread is cancelled the way Dramatiq aborts and times out actors
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Cancelled))
    thread.join(10)

    # Then the exception surfaced long before the checkout timeout, and nothing was left behind
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], Cancelled)
    assert not dest.exists()


def test_checkout_refuses_a_loopback_http_source_when_private_hosts_are_not_allowed(tmp_path, monkeypatch):
    # Given a Popen that must not be reached
    monkeypatch.setattr(checkout_module.subprocess, "Popen", _fail_if_called)

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout("http://127.0.0.1:9/r.git", "main", tmp_path / "source", allow_private=False)
    assert excinfo.value.code == "SOURCE_NOT_ALLOWED"


def _fail_if_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("must not be called")


# --- connecting to the address that was checked -------------------------------


def _spy_git(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record git's argv and environment, and run `true` in its place."""
    calls: list[dict[str, Any]] = []
    real_popen = subprocess.Popen

    def spy(argv: list[str], **kwargs: Any) -> Any:
        calls.append({"argv": argv, **kwargs})
        return real_popen(["true"], **kwargs)

    monkeypatch.setattr(checkout_module.subprocess, "Popen", spy)
    return calls


def test_checkout_pins_an_https_source_to_the_addresses_it_checked(tmp_path, monkeypatch):
    # Given a name that resolves to public addresses now (and could resolve elsewhere later)
    monkeypatch.setattr(socket, "getaddrinfo", resolver("93.184.216.34", "2606:2800:220:1::1"))
    calls = _spy_git(monkeypatch)

    # When
    _checkout("https://git.example.com/team/site.git", "main", tmp_path / "src", allow_private=False)

    # Then curl inside git connects to exactly those addresses, and follows no redirect
    (call,) = calls
    argv = call["argv"]
    assert "http.curloptResolve=git.example.com:443:93.184.216.34,[2606:2800:220:1::1]" in argv
    assert "http.followRedirects=false" in argv
    assert argv[-2] == "https://git.example.com/team/site.git"


def test_checkout_pins_ssh_and_git_protocol_sources(tmp_path, monkeypatch):
    # Given a name that resolves to a public address
    monkeypatch.setattr(socket, "getaddrinfo", resolver("93.184.216.34"))
    calls = _spy_git(monkeypatch)

    # When an scp-like ssh source and a git:// source are cloned
    _checkout("git@git.example.com:team/site.git", "main", tmp_path / "a", allow_private=False)
    _checkout("git://git.example.com:9418/team/site.git", "main", tmp_path / "b", allow_private=False)

    # Then ssh is told the address (the host key still under the name), git:// names the address
    ssh_call, git_call = calls
    assert ssh_call["env"]["GIT_SSH_COMMAND"] == (
        "ssh -o BatchMode=yes -o HostName=93.184.216.34 -o HostKeyAlias=git.example.com"
    )
    assert ssh_call["argv"][-2] == "git@git.example.com:team/site.git"
    assert git_call["argv"][-2] == "git://93.184.216.34:9418/team/site.git"


def test_a_password_in_an_ssh_or_git_protocol_source_never_reaches_git(tmp_path, monkeypatch):
    # Given sources whose URL carries a password, which neither protocol uses
    monkeypatch.setattr(socket, "getaddrinfo", resolver("93.184.216.34"))
    calls = _spy_git(monkeypatch)

    # When they are cloned
    _checkout("ssh://git:s3cret@git.example.com/team/site.git", "main", tmp_path / "a", allow_private=False)
    _checkout("git://anon:s3cret@git.example.com/team/site.git", "main", tmp_path / "b", allow_private=False)

    # Then git gets the user and the checked address, never the password (in its argv, environment or
    # the .git/config it writes the URL into)
    ssh_call, git_call = calls
    assert ssh_call["argv"][-2] == "ssh://git@git.example.com/team/site.git"
    assert git_call["argv"][-2] == "git://anon@93.184.216.34/team/site.git"
    for call in calls:
        assert "s3cret" not in repr(call)


def test_checkout_leaves_resolution_to_git_when_private_hosts_are_allowed(tmp_path, monkeypatch):
    # Given private hosts allowed: nothing is resolved ahead, so nothing is pinned
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)
    calls = _spy_git(monkeypatch)

    # When
    _checkout("https://git.internal/team/site.git", "main", tmp_path / "src", allow_private=True)

    # Then
    (call,) = calls
    assert not any(arg.startswith("http.curloptResolve") for arg in call["argv"])
    assert call["env"]["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"


def test_the_installed_git_connects_where_the_pin_says(tmp_path):
    # Given a name nothing resolves, pinned to a local server (git older than 2.37 would ignore the pin)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        remote = checkout_module._Remote(
            scheme="http", host="repo.invalid", port=port, addresses=("127.0.0.1",)
        )
        url = f"http://repo.invalid:{port}/site.git"
        pins, clone_url, _ = checkout_module._pinned(remote, url)

        # When git asks the pinned name for its refs
        subprocess.run(
            ["git", *pins, "ls-remote", clone_url],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_TERMINAL_PROMPT": "0"},
            capture_output=True,
            timeout=30,
            check=False,
        )

    # Then the request reached the pinned address
    assert seen
    assert seen[0].startswith("/site.git/info/refs")


def test_validate_source_url_refuses_the_scp_like_form_with_a_port(monkeypatch):
    # Given git's `user@[host:port]:path`, which would reach the resolver as the name "host:2222"
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)

    # When / Then it is refused when saved, saying what to write instead
    with pytest.raises(PermanentJobError) as excinfo:
        validate_source_url(
            "git@[git.example.com:2222]:team/site.git", allow_local=False, allow_private=False
        )
    assert excinfo.value.code == "SOURCE_INVALID"
    assert "ssh://" in excinfo.value.detail
    validate_source_url("git@[2606:2800:220:1::1]:team/site.git", allow_local=False, allow_private=False)


def _smart_http(root: Path, expected_authorization: str, seen: list[str]) -> type[BaseHTTPRequestHandler]:
    """git's smart HTTP protocol (`git http-backend` as a CGI) for the repositories in `root`,
    behind Basic authentication; records each request's Authorization header in `seen`."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != expected_authorization:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            cgi = subprocess.run(
                ["git", "http-backend"],
                input=body,
                capture_output=True,
                check=True,
                env={
                    "GIT_PROJECT_ROOT": str(root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "PATH": "/usr/bin:/bin",
                },
            )
            head, _, payload = cgi.stdout.partition(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if line)
            self.send_response(int(headers.pop("Status", "200").split()[0]))
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def test_credentials_in_the_url_reach_git_but_no_file_of_the_checkout(repo, tmp_path):
    # Given the repository served over HTTP behind Basic authentication
    served = tmp_path / "served"
    _git(tmp_path, "clone", "-q", "--bare", str(repo), str(served / "repo.git"))
    expected = "Basic " + base64.b64encode(b"builder:s@cret/token").decode()
    seen: list[str] = []

    # When it is cloned from a URL carrying (percent-encoded) credentials
    with http_server(_smart_http(served, expected, seen)) as base_url:
        host = base_url.removeprefix("http://")
        url = f"http://builder:s%40cret%2Ftoken@{host}/repo.git"
        dest = checkout(
            url,
            "main",
            dest=tmp_path / "src",
            timeout=30,
            allow_local=False,
            allow_private=True,
            on_output=lambda text: None,
        )

    # Then git authenticated with them, and no file of the checkout holds them in any form
    assert (dest / "index.html").read_text() == "<h1>v2</h1>"
    assert expected in seen
    assert _git(dest, "config", "remote.origin.url").strip() == f"http://{host}/repo.git"
    for path in dest.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (b"s@cret", b"s%40cret", expected.split()[1].encode()):
                assert secret not in data, path
