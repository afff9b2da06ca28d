"""Package step on a genuinely full file system: a small tmpfs (tests/support/full_disk.py)."""

from __future__ import annotations

from tests.support.full_disk import on_full_disk


def test_a_workspace_that_fills_while_packaging_is_transient_and_leaves_nothing_behind(tmp_path):
    # Given a workspace on a file system with 32 KiB free, and a site of 128 KiB that does not compress
    # When it is packaged, its workspace removed, then the disk freed and the attempt run again
    report = on_full_disk(tmp_path / "disk", "package", leave=32 * 1024, files=8, size=16 * 1024)

    # Then the full disk is a transient PACKAGE_NO_SPACE (the retry comes later, with backoff)
    full = report["full"]
    assert (full["error"], full.get("code")) == ("TransientJobError", "PACKAGE_NO_SPACE")
    assert full["detail"].startswith("no space left to write the archive: [Errno 28]")
    # And no temporary archive is left in the output folder
    assert full["out"] == []
    # And the workspace's removal needs no space: nothing of the attempt is left
    assert report["workspaces_after"] == []
    # And with room, the next attempt packages the whole site
    assert report["room"] == {"error": None, "members": 8}
