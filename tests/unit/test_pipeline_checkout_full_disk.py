"""Checkout step on a genuinely full file system: a small tmpfs (tests/support/full_disk.py)."""

from __future__ import annotations

import random
import subprocess

import pytest

from tests.support.full_disk import on_full_disk


# git fails at a different write for each: its template files, the pack, the working tree.
@pytest.mark.parametrize("free_kib", [32, 100, 150])
def test_a_workspace_that_fills_while_cloning_is_transient_and_leaves_nothing_behind(tmp_path, free_kib):
    # Given a repository of 128 KiB that does not compress, and a workspace with less than that free
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "video.bin").write_bytes(random.Random(1).randbytes(128 * 1024))  # noqa: S311 - incompressible, not secret
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repository)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "video"], check=True)

    # When it is cloned there, its workspace removed, then the disk freed and the attempt run again
    report = on_full_disk(tmp_path / "disk", "checkout", repository=str(repository), leave=free_kib * 1024)

    # Then the full disk is a transient CHECKOUT_NO_SPACE that says so, not a permanent CHECKOUT_FAILED
    full = report["full"]
    assert (full["error"], full.get("code")) == ("TransientJobError", "CHECKOUT_NO_SPACE")
    assert full["detail"].startswith("could not write the checkout (a full disk?)")
    # And nothing of the clone or the workspace is left
    assert full["source_left"] is False
    assert report["workspaces_after"] == []
    # And with room, the next attempt checks the commit out
    assert report["room"] == {"error": None, "files": ["video.bin"]}
