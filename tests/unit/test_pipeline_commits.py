"""A given commit: its name checked before git sees it, and fetched only if it is in the ref's history."""

from __future__ import annotations

import base64
import importlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError
from publishing.pipeline.checkout import checkout, head_commit
from publishing.pipeline.commits import parse_commit
from tests.fakes import http_server
from tests.unit.test_pipeline_checkout import _smart_http

checkout_module = importlib.import_module("publishing.pipeline.checkout")

MISSING = "0123456789abcdef0123456789abcdef01234567"


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """`main`: first (tagged v1), second; `other`: off first, one commit of its own (tagged o1)."""
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "index.html").write_text("<h1>v1</h1>")
    _git(path, "add", "index.html")
    _git(path, "commit", "-q", "-m", "first")
    _git(path, "tag", "-a", "v1", "-m", "version 1")
    _git(path, "checkout", "-q", "-b", "other")
    (path / "index.html").write_text("<h1>other</h1>")
    _git(path, "commit", "-q", "-am", "other")
    _git(path, "tag", "o1")
    _git(path, "checkout", "-q", "main")
    (path / "index.html").write_text("<h1>v2</h1>")
    _git(path, "commit", "-q", "-am", "second")
    return path


def _checkout(repo: Path, commit: str, dest: Path, ref: str = "main") -> Path:
    return checkout(
        repo.as_uri(),
        ref,
        dest=dest,
        timeout=60,
        allow_local=True,
        allow_private=True,
        commit=commit,
        on_output=lambda text: None,
    )


def _fail_if_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("must not be called")


def test_an_earlier_commit_of_the_branch_is_checked_out_alone(repo, tmp_path):
    # Given the id of the first of main's two commits
    first = _git(repo, "rev-parse", "main~1")
    dest = tmp_path / "ws" / "source"

    # When
    result = _checkout(repo, first, dest)

    # Then that commit is checked out, detached, with no history below it
    assert result == dest
    assert (dest / "index.html").read_text() == "<h1>v1</h1>"
    assert head_commit(dest, timeout=30).sha == first
    assert _git(dest, "rev-list", "--count", "HEAD") == "1"


def test_a_tag_in_the_history_of_the_branch_is_checked_out_as_its_commit(repo, tmp_path):
    # When the annotated tag v1 is asked for
    dest = _checkout(repo, "v1", tmp_path / "ws" / "source")

    # Then its commit is checked out
    assert (dest / "index.html").read_text() == "<h1>v1</h1>"
    assert head_commit(dest, timeout=30).sha == _git(repo, "rev-parse", "v1^{commit}")


def test_an_upper_case_commit_id_is_the_same_commit(repo, tmp_path):
    # When the head's id is given in capitals
    dest = _checkout(repo, _git(repo, "rev-parse", "main").upper(), tmp_path / "ws" / "source")

    # Then
    assert (dest / "index.html").read_text() == "<h1>v2</h1>"


@pytest.mark.parametrize("commit", ["other", "o1"], ids=["commit id", "tag"])
def test_a_commit_of_another_branch_is_refused_and_leaves_no_destination(repo, tmp_path, commit):
    # Given a commit (or a tag on it) that is in the repository, but not in main's history
    wanted = _git(repo, "rev-parse", "other") if commit == "other" else commit
    dest = tmp_path / "ws" / "source"

    # When / Then it may not be published under main
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(repo, wanted, dest)
    assert excinfo.value.code == "COMMIT_NOT_FOUND"
    assert "not in the history of 'main'" in excinfo.value.detail
    assert not dest.exists()


@pytest.mark.parametrize("commit", [MISSING, "v9"], ids=["commit id", "tag"])
def test_a_commit_the_repository_does_not_hold_fails_permanently(repo, tmp_path, commit):
    # Given a commit id or a tag the repository does not have
    dest = tmp_path / "ws" / "source"

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(repo, commit, dest)
    assert excinfo.value.code == "COMMIT_NOT_FOUND"
    assert not dest.exists()


def test_a_commit_of_a_branch_that_does_not_exist_fails_as_a_clone_of_it_would(repo, tmp_path):
    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(repo, "v1", tmp_path / "ws" / "source", ref="no-such-branch")

    # Then
    assert excinfo.value.code == "CHECKOUT_FAILED"
    assert "no-such-branch" in excinfo.value.detail


def _refusing_fetch_by_id(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], int]]:
    """git's protocol v0 for the one-commit fetch, whose server refuses an id it did not advertise
    (as servers without `uploadpack.allowReachableSHA1InWant` do); each git command and its status."""
    real = checkout_module._run_git
    calls: list[tuple[list[str], int]] = []

    def run_git(argv: list[str], **kwargs: Any) -> tuple[int, str]:
        if "--depth" in argv and "fetch" in argv:
            argv = [argv[0], "-c", "protocol.version=0", *argv[1:]]
        returncode, stderr = real(argv, **kwargs)
        calls.append((argv, returncode))
        return returncode, stderr

    monkeypatch.setattr(checkout_module, "_run_git", run_git)
    return calls


def test_a_server_that_refuses_a_fetch_by_id_sends_the_history_of_the_ref_instead(
    repo, tmp_path, monkeypatch
):
    # Given a server that refuses to send a commit by its id
    calls = _refusing_fetch_by_id(monkeypatch)
    first = _git(repo, "rev-parse", "main~1")

    # When
    dest = _checkout(repo, first, tmp_path / "ws" / "source")

    # Then the one-commit fetch was refused, the branch came whole, and the commit is checked out
    fetches = [(argv[argv.index("fetch") :], status) for argv, status in calls if "fetch" in argv]
    assert [status != 0 for _, status in fetches] == [True, False]
    assert "--depth" not in fetches[1][0]
    assert (dest / "index.html").read_text() == "<h1>v1</h1>"
    assert head_commit(dest, timeout=30).sha == first


@pytest.mark.parametrize("commit", ["other", MISSING])
def test_a_server_that_refuses_a_fetch_by_id_still_refuses_a_commit_outside_the_ref(
    repo, tmp_path, monkeypatch, commit
):
    # Given a server that refuses to send a commit by its id
    _refusing_fetch_by_id(monkeypatch)
    wanted = _git(repo, "rev-parse", "other") if commit == "other" else commit

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(repo, wanted, tmp_path / "ws" / "source")
    assert excinfo.value.code == "COMMIT_NOT_FOUND"


def test_a_commit_over_http_with_credentials_leaves_them_in_no_file_of_the_checkout(repo, tmp_path):
    # Given the repository served over HTTP (protocol v0: no fetch by id) behind Basic authentication
    served = tmp_path / "served"
    _git(tmp_path, "clone", "-q", "--bare", str(repo), str(served / "repo.git"))
    expected = "Basic " + base64.b64encode(b"builder:s3cret").decode()
    seen: list[str] = []
    first = _git(repo, "rev-parse", "main~1")

    # When its first commit is checked out from a URL carrying credentials
    with http_server(_smart_http(served, expected, seen)) as base_url:
        url = f"http://builder:s3cret@{base_url.removeprefix('http://')}/repo.git"
        dest = checkout(
            url,
            "main",
            on_output=lambda text: None,
            dest=tmp_path / "src",
            timeout=30,
            allow_local=False,
            allow_private=True,
            commit=first,
        )

    # Then git authenticated, checked the commit out, and no file of the checkout holds the secret
    assert expected in seen
    assert (dest / "index.html").read_text() == "<h1>v1</h1>"
    for path in dest.rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes(), path
            assert expected.split()[1].encode() not in path.read_bytes(), path


BAD_COMMITS = [
    "abc1234",  # a short id
    "a" * 39,
    "a" * 41,
    "--upload-pack=touch /tmp/x",
    "-v1",
    "v1..v2",
    "has space",
    "v1\n",
    "v1\x00",
    "v1\x1b[0m",
    "x:y",
    "v1^{tree}",
    "v1@{1}",
    "v1~1",
]


@pytest.mark.parametrize("commit", BAD_COMMITS)
def test_parse_commit_refuses_short_ids_and_option_like_or_malformed_names(commit):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        parse_commit(commit)
    assert excinfo.value.code == "COMMIT_INVALID"


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("A" * 40, "a" * 40),
        ("0f" * 32, "0f" * 32),
        ("v1.4.0", "v1.4.0"),
        ("release/2026-11", "release/2026-11"),
    ],
)
def test_parse_commit_takes_full_ids_lower_cased_and_tag_names(given, parsed):
    assert parse_commit(given) == parsed


@pytest.mark.parametrize("commit", ["abc1234", "--upload-pack=touch /tmp/x", "v1\n"])
def test_checkout_refuses_a_malformed_commit_before_running_anything(repo, tmp_path, monkeypatch, commit):
    # Given a Popen that must not be reached
    monkeypatch.setattr(checkout_module.subprocess, "Popen", _fail_if_called)

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _checkout(repo, commit, tmp_path / "source")
    assert excinfo.value.code == "COMMIT_INVALID"
