"""The stores when the storage is full: file:// on a genuinely full file system (a small tmpfs,
tests/support/full_disk.py)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest

from publishing.pipeline.stores.file import FileStore
from tests.support.full_disk import on_full_disk
from tests.support.stores import ORIGIN, PUBLISHING_ID, make_artifact

ARCHIVE = f"42/my-site/{PUBLISHING_ID}.tar.gz"
MANIFEST = f"42/my-site/{PUBLISHING_ID}.json"


def _archive(path: Path, seed: int) -> str:
    """100 KiB of random bytes at `path`; their sha256."""
    data = random.Random(seed).randbytes(100 * 1024)  # noqa: S311 - incompressible, not secret
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _assert_stored(files: dict[str, dict[str, Any]], sha256: str) -> None:
    assert sorted(files) == [MANIFEST, ARCHIVE]
    assert files[ARCHIVE]["sha256"] == sha256
    assert files[MANIFEST]["names"] == sha256


@pytest.mark.parametrize(
    "leave",
    [
        pytest.param(16 * 1024, id="fills-during-the-archive-copy"),
        pytest.param("archive", id="room-for-the-archive-but-not-the-manifest"),
    ],
)
@pytest.mark.parametrize("earlier", [False, True], ids=["empty-store", "over-an-earlier-archive"])
def test_a_store_folder_that_fills_keeps_what_a_reader_saw_and_the_retry_stores_the_archive(
    tmp_path, leave, earlier
):
    # Given a file store on a file system with `leave` free, empty or holding an earlier archive of
    # this publishing (a rebuild's archive may differ)
    new_sha = _archive(tmp_path / "new.tar.gz", seed=1)
    old_sha = _archive(tmp_path / "old.tar.gz", seed=2)
    options = {"earlier": str(tmp_path / "old.tar.gz")} if earlier else {}

    # When the archive is submitted, then again once the disk has room
    report = on_full_disk(
        tmp_path / "disk", "file_store", artifact=str(tmp_path / "new.tar.gz"), leave=leave, **options
    )

    # Then the full store is a transient TARGET_UNAVAILABLE
    full = report["full"]
    assert (full["error"], full.get("code")) == ("TransientJobError", "TARGET_UNAVAILABLE")
    assert "[Errno 28] No space left on device" in full["detail"]
    # And a reader sees what was there before, whole: no part of the new archive, no archive without
    # a manifest naming it, no temporary file
    if earlier:
        _assert_stored(full["files"], old_sha)
    else:
        assert full["files"] == {}
    # And the retry with room stores the new archive and its manifest, and nothing else
    assert report["room"]["error"] is None
    _assert_stored(report["room"]["files"], new_sha)


def test_the_partial_copies_a_killed_worker_left_are_removed_by_the_next_submit(tmp_path, caplog):
    # Given the temporary files of a worker killed mid-copy, beside another publishing's
    project_dir = tmp_path / "store" / "42" / "my-site"
    project_dir.mkdir(parents=True)
    leftovers = [
        project_dir / f".{PUBLISHING_ID}.tar.gz.k1ll3d.tmp",
        project_dir / f".{PUBLISHING_ID}.json.x.tmp",
    ]
    for leftover in leftovers:
        leftover.write_bytes(b"part of an archive")
    other = project_dir / ".0d1e2f3a-other.tar.gz.k1ll3d.tmp"
    other.write_bytes(b"another publishing's copy, still being written")
    artifact = make_artifact(tmp_path / "pub.tar.gz")

    # When the publishing is submitted again
    FileStore(roots=[str(tmp_path)]).submit(
        artifact, target_url=(tmp_path / "store").as_uri(), publishing_id=PUBLISHING_ID, origin=ORIGIN
    )

    # Then its own leftovers are gone, and said so; the other publishing's copy is left alone
    assert sorted(path.name for path in project_dir.iterdir()) == sorted(
        [f"{PUBLISHING_ID}.json", f"{PUBLISHING_ID}.tar.gz", other.name]
    )
    assert sum("left by an earlier attempt" in record.getMessage() for record in caplog.records) == 2
