"""Rollback and re-run, real processes: an earlier commit published again is its archive, byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from publishing.models import Project
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _git(repo: Path, *args: str) -> str:
    argv = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def _publish(stack: Stack, api: requests.Session, project_id: object, **body: str) -> dict[str, Any]:
    response = api.post(
        f"{stack.base_url}/api/v1/publishing/initiate",
        json={"project_id": str(project_id), **body},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return stack.wait_for(api, response.json()["id"])


def _archive(store: Path, project: Project, publishing: dict[str, Any]) -> bytes:
    return (store / str(project.owner_id) / project.slug / f"{publishing['id']}.tar.gz").read_bytes()


def test_publishing_an_earlier_commit_again_gives_its_first_archive_and_a_rerun_its_own(
    redis_url, make_stack, make_project, owner_token, git_source: Path, tmp_path: Path
) -> None:
    # Given a project whose branch holds commit A, published once
    store = tmp_path / "store"
    project = make_project(f"file://{store}")
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token)
    commit_a = _git(git_source, "rev-parse", "HEAD")
    first = _publish(stack, api, project.pk)
    assert (first["status"], first["commit_sha"]) == ("published", commit_a), first

    # And then commit B on the branch, published as its new head
    (git_source / "site" / "index.html").write_text("<h1>{{ title }}, again</h1>\n")
    _git(git_source, "commit", "-q", "-am", "Say it again")
    commit_b = _git(git_source, "rev-parse", "HEAD")
    second = _publish(stack, api, project.pk)
    assert (second["status"], second["commit_sha"], second["commit_subject"]) == (
        "published",
        commit_b,
        "Say it again",
    ), second
    assert second["artifact_sha256"] != first["artifact_sha256"]

    # When commit A is published again (the rollback)
    rollback = _publish(stack, api, project.pk, commit=commit_a)

    # Then it is A's archive, byte for byte, built from A
    assert rollback["status"] == "published", rollback
    assert (rollback["requested_commit"], rollback["commit_sha"]) == (commit_a, commit_a)
    assert rollback["artifact_sha256"] == first["artifact_sha256"]
    assert _archive(store, project, rollback) == _archive(store, project, first)
    assert f"checkout -> {commit_a[:12]} init" in api.get(rollback["log_url"], timeout=10).text

    # When the publishing of B (published, and no longer the one live) is re-run
    response = api.post(second["rerun"], timeout=30)
    assert response.status_code == 202, response.text
    rerun = stack.wait_for(api, response.json()["id"])

    # Then a new publishing of B gives B's archive again
    assert rerun["id"] != second["id"]
    assert (rerun["status"], rerun["requested_commit"], rerun["commit_sha"]) == (
        "published",
        commit_b,
        commit_b,
    )
    assert _archive(store, project, rerun) == _archive(store, project, second)


def test_a_commit_the_repository_does_not_hold_fails_at_once_without_retries(
    redis_url, make_stack, make_project, owner_token, git_source: Path, tmp_path: Path
) -> None:
    # Given a project, and a commit id its repository does not have, and a tag on another branch
    project = make_project(f"file://{tmp_path / 'store'}")
    _git(git_source, "checkout", "-q", "-b", "elsewhere")
    _git(git_source, "commit", "-q", "--allow-empty", "-m", "not on main")
    _git(git_source, "tag", "elsewhere-1")
    _git(git_source, "checkout", "-q", "main")
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token)

    for commit in ("0123456789abcdef0123456789abcdef01234567", "elsewhere-1"):
        # When it is asked for
        done = _publish(stack, api, project.pk, commit=commit)

        # Then the publishing fails for good on its first attempt, saying why
        assert (done["status"], done["error_code"], done["attempts"]) == ("failed", "COMMIT_NOT_FOUND", 1), (
            done
        )
        assert [a["outcome"] for a in done["attempt_history"]] == ["failed"]
