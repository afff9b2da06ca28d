"""file:// store: its layout, idempotency, roots and errors, on the local disk."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline.base import Artifact, Origin
from publishing.pipeline.stores.file import FileStore
from tests.support.stores import COMMIT, ORIGIN, PUBLISHING_ID, fail_if_called, make_artifact

file_store_module = importlib.import_module("publishing.pipeline.stores.file")


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    return make_artifact(tmp_path / "pub.tar.gz")


def _submit(artifact: Artifact, target_url: str, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "publishing_id": PUBLISHING_ID,
        "origin": ORIGIN,
        "store_roots": ["/"],
        **overrides,
    }
    store = FileStore(roots=options.pop("store_roots"))
    return store.submit(artifact, target_url=target_url, **options)


def copies_across_file_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workspace and the store on two file systems: no hard link, the archive is copied."""

    def link(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(file_store_module.os, "link", link)


def test_submit_to_a_directory_writes_the_archive_and_then_its_manifest(artifact, tmp_path):
    # Given a store directory
    store = tmp_path / "store"

    # When
    submission = _submit(artifact, store.as_uri())

    # Then the archive and manifest sit under the project, with no temporary files left
    final = store / "42" / "my-site" / f"{PUBLISHING_ID}.tar.gz"
    assert final.read_bytes() == artifact.path.read_bytes()
    assert sorted(p.name for p in (store / "42" / "my-site").iterdir()) == [
        f"{PUBLISHING_ID}.json",
        f"{PUBLISHING_ID}.tar.gz",
    ]
    manifest = json.loads((store / "42" / "my-site" / f"{PUBLISHING_ID}.json").read_text())
    assert manifest["publishing_id"] == PUBLISHING_ID
    assert manifest["project"] == "my-site"
    assert manifest["project_id"] == ORIGIN.project_id
    assert manifest["owner_id"] == ORIGIN.owner_id
    assert manifest["sha256"] == artifact.sha256
    assert manifest["size"] == artifact.size
    assert manifest["file"] == f"{PUBLISHING_ID}.tar.gz"
    assert datetime.fromisoformat(manifest["submitted_at"]).utcoffset() == timedelta(0)
    assert submission.uri == final.as_uri()
    assert submission.uri.startswith("file:///")
    assert submission.ref == PUBLISHING_ID


def test_the_manifest_names_the_commit_the_archive_was_built_from(tmp_path):
    # Given an archive built from a known commit, and one whose commit is unknown
    store = tmp_path / "store"
    built = make_artifact(tmp_path / "built.tar.gz", commit=COMMIT)
    unknown = make_artifact(tmp_path / "unknown.tar.gz", b"other bytes")

    # When both are submitted
    _submit(built, store.as_uri())
    _submit(unknown, store.as_uri(), publishing_id="other")

    # Then the first manifest names the commit (UTF-8), the second names none
    folder = store / "42" / "my-site"
    manifest = json.loads((folder / f"{PUBLISHING_ID}.json").read_text(encoding="utf-8"))
    assert (manifest["commit_sha"], manifest["commit_subject"], manifest["commit_author"]) == (
        COMMIT.sha,
        COMMIT.subject,
        COMMIT.author,
    )
    assert not any(key.startswith("commit") for key in json.loads((folder / "other.json").read_text()))


def test_resubmitting_the_same_archive_rewrites_nothing(artifact, tmp_path, monkeypatch):
    # Given an archive already submitted
    store = tmp_path / "store"
    first = _submit(artifact, store.as_uri())
    final = store / "42" / "my-site" / f"{PUBLISHING_ID}.tar.gz"
    manifest = store / "42" / "my-site" / f"{PUBLISHING_ID}.json"
    before = (final.stat().st_ino, manifest.stat().st_ino, manifest.read_text())
    monkeypatch.setattr(file_store_module.shutil, "copyfileobj", fail_if_called)

    # When it is submitted again (a retry)
    second = _submit(artifact, store.as_uri())

    # Then neither file was replaced
    assert second == first
    assert (final.stat().st_ino, manifest.stat().st_ino, manifest.read_text()) == before


def test_resubmitting_different_content_replaces_archive_and_manifest(artifact, tmp_path):
    # Given an archive already submitted
    store = tmp_path / "store"
    _submit(artifact, store.as_uri())

    # When other content is submitted for the same publishing
    other = make_artifact(tmp_path / "other.tar.gz", b"other content")
    _submit(other, store.as_uri())

    # Then
    final = store / "42" / "my-site" / f"{PUBLISHING_ID}.tar.gz"
    assert final.read_bytes() == b"other content"
    manifest = json.loads((store / "42" / "my-site" / f"{PUBLISHING_ID}.json").read_text())
    assert manifest["sha256"] == other.sha256


def test_submit_to_a_directory_reports_a_full_disk_as_transient_and_leaves_no_temp_file(
    artifact, tmp_path, monkeypatch
):
    copies_across_file_systems(monkeypatch)

    # Given a disk that fills up during the copy
    def copy_fails(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_store_module.shutil, "copyfileobj", copy_fails)
    store = tmp_path / "store"

    # When
    with pytest.raises(TransientJobError) as excinfo:
        _submit(artifact, store.as_uri())

    # Then
    assert excinfo.value.code == "TARGET_UNAVAILABLE"
    assert list((store / "42" / "my-site").iterdir()) == []


def test_submit_to_a_path_that_is_not_a_directory_is_rejected_permanently(artifact, tmp_path):
    # Given a store URL naming a regular file
    not_a_dir = tmp_path / "store"
    not_a_dir.write_text("file")

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, not_a_dir.as_uri())
    assert excinfo.value.code == "TARGET_REJECTED"


@pytest.mark.parametrize("slug", ["..", "a/b", ".hidden", ""])
def test_submit_to_a_directory_refuses_unsafe_path_components(artifact, tmp_path, slug):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, (tmp_path / "store").as_uri(), origin=Origin("42", "p", slug))
    assert excinfo.value.code == "TARGET_INVALID"


def test_submit_refuses_a_file_target_outside_the_store_roots_and_writes_nothing(artifact, tmp_path):
    # Given a target outside the only store root (saved before the roots changed)
    outside = tmp_path / "private"
    outside.mkdir(mode=0o700)

    # When the worker submits to it
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, outside.as_uri(), store_roots=[str(tmp_path / "store")])

    # Then it is refused at run time too, and nothing was written there
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert list(outside.iterdir()) == []


def test_two_owners_projects_of_the_same_slug_never_share_a_folder(artifact, tmp_path):
    # Given two owners, each with a project called "site", publishing to the same store
    store = tmp_path / "store"
    alice = _submit(artifact, store.as_uri(), publishing_id="p-a", origin=Origin("1", "proj-a", "site"))
    bob = _submit(artifact, store.as_uri(), publishing_id="p-b", origin=Origin("2", "proj-b", "site"))

    # Then each owner's artifact and manifest are in a folder of that owner
    assert alice.uri == (store / "1" / "site" / "p-a.tar.gz").as_uri()
    assert bob.uri == (store / "2" / "site" / "p-b.tar.gz").as_uri()
    assert sorted(p.name for p in (store / "1" / "site").iterdir()) == ["p-a.json", "p-a.tar.gz"]
    # And each manifest names its project and owner
    manifest = json.loads((store / "2" / "site" / "p-b.json").read_text())
    assert (manifest["project_id"], manifest["owner_id"], manifest["project"]) == ("proj-b", "2", "site")


# --- temporary files of other attempts ----------------------------------------------


def _leftover(project_dir: Path, name: str) -> Path:
    project_dir.mkdir(parents=True, exist_ok=True)
    path = project_dir / name
    path.write_bytes(b"part of an archive")
    return path


def test_a_temporary_file_another_attempt_still_writes_survives_the_next_submit(artifact, tmp_path):
    # Given a stale attempt still writing its copy (its temp file flocked through its own open file),
    # and the copy of a worker killed mid-write (nobody holds its lock)
    project_dir = tmp_path / "store" / "42" / "my-site"
    being_written = _leftover(project_dir, f".{PUBLISHING_ID}.tar.gz.wr1t1ng.tmp")
    killed = _leftover(project_dir, f".{PUBLISHING_ID}.json.k1ll3d.tmp")
    writer = os.open(being_written, os.O_RDWR)
    try:
        fcntl.flock(writer, fcntl.LOCK_EX)

        # When the publishing is submitted again
        _submit(artifact, (tmp_path / "store").as_uri())

        # Then the file being written is left to its writer; the killed worker's is gone
        assert being_written.read_bytes() == b"part of an archive"
        assert not killed.exists()
        assert sorted(path.name for path in project_dir.iterdir()) == sorted(
            [f"{PUBLISHING_ID}.json", f"{PUBLISHING_ID}.tar.gz", being_written.name]
        )
    finally:
        os.close(writer)


def test_a_stale_attempt_submitting_while_the_new_one_copies_leaves_its_temp_file_alone(
    tmp_path, monkeypatch
):
    copies_across_file_systems(monkeypatch)
    # Given an attempt whose archive copy is under way, and a stale attempt of the same publishing
    # (resumed after its lease ran out) that submits meanwhile
    store = tmp_path / "store"
    new = make_artifact(tmp_path / "new.tar.gz", b"the new attempt's archive")
    stale = make_artifact(tmp_path / "stale.tar.gz", b"the stale attempt's archive")
    copy = shutil.copyfileobj

    def copy_while_the_stale_attempt_submits(src: Any, dst: Any, *args: Any) -> None:
        monkeypatch.setattr(file_store_module.shutil, "copyfileobj", copy)
        _submit(stale, store.as_uri())
        copy(src, dst, *args)

    monkeypatch.setattr(file_store_module.shutil, "copyfileobj", copy_while_the_stale_attempt_submits)

    # When the new attempt finishes its copy and renames it into place
    submission = _submit(new, store.as_uri())

    # Then it stores its archive, beside its manifest, and leaves no temporary file
    project_dir = store / "42" / "my-site"
    assert Path(submission.uri.removeprefix("file://")).read_bytes() == b"the new attempt's archive"
    assert json.loads((project_dir / f"{PUBLISHING_ID}.json").read_text())["sha256"] == new.sha256
    assert sorted(path.name for path in project_dir.iterdir()) == [
        f"{PUBLISHING_ID}.json",
        f"{PUBLISHING_ID}.tar.gz",
    ]


def test_a_temporary_file_removed_between_its_creation_and_its_lock_is_made_again(
    artifact, tmp_path, monkeypatch
):
    copies_across_file_systems(monkeypatch)
    # Given another submit's cleanup that removes the first temporary file before its writer locks it
    made: list[str] = []
    mkstemp = tempfile.mkstemp

    def mkstemp_then_cleanup(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = mkstemp(*args, **kwargs)
        if not made:
            final = Path(name).parent / kwargs["prefix"].strip(".")
            file_store_module._remove_leftovers(final)
            assert not Path(name).exists()
        made.append(name)
        return fd, name

    monkeypatch.setattr(file_store_module.tempfile, "mkstemp", mkstemp_then_cleanup)

    # When
    submission = _submit(artifact, (tmp_path / "store").as_uri())

    # Then the writer made another and stored the archive through it
    assert len(made) == 3  # the removed one, the archive's, the manifest's
    assert Path(submission.uri.removeprefix("file://")).read_bytes() == artifact.path.read_bytes()


def test_a_leftover_that_cannot_be_removed_is_logged_and_the_submit_goes_on(
    artifact, tmp_path, monkeypatch, caplog
):
    # Given a leftover the worker may not remove
    project_dir = tmp_path / "store" / "42" / "my-site"
    stuck = _leftover(project_dir, f".{PUBLISHING_ID}.tar.gz.k1ll3d.tmp")
    unlink = Path.unlink

    def unlink_refused(path: Path, missing_ok: bool = False) -> None:
        if path == stuck:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink_refused)

    # When
    submission = _submit(artifact, (tmp_path / "store").as_uri())

    # Then the archive is stored, and the leftover is reported as a WARNING
    assert Path(submission.uri.removeprefix("file://")).read_bytes() == artifact.path.read_bytes()
    assert stuck.exists()
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("Could not remove" in message for message in warnings)


def test_an_archive_on_the_stores_file_system_is_linked_not_copied(artifact, tmp_path, monkeypatch):
    # Given a workspace's archive on the store's file system
    monkeypatch.setattr(file_store_module.shutil, "copyfileobj", fail_if_called)

    # When it is submitted
    submission = _submit(artifact, (tmp_path / "store").as_uri())

    # Then the store holds the same file, not a copy: no byte was written twice
    stored = Path(submission.uri.removeprefix("file://"))
    assert os.path.samestat(stored.stat(), artifact.path.stat())
    assert stored.stat().st_mode & 0o777 == 0o600
    # And removing the workspace's name leaves the stored archive whole
    artifact.path.unlink()
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == artifact.sha256


def test_an_archive_on_another_file_system_is_copied(artifact, tmp_path, monkeypatch):
    # Given a workspace on another file system than the store's
    copies_across_file_systems(monkeypatch)

    # When its archive is submitted
    submission = _submit(artifact, (tmp_path / "store").as_uri())

    # Then the store holds a copy of the same bytes
    stored = Path(submission.uri.removeprefix("file://"))
    assert not os.path.samestat(stored.stat(), artifact.path.stat())
    assert stored.read_bytes() == artifact.path.read_bytes()
