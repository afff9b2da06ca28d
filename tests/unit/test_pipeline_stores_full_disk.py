"""The stores when the storage is full: file:// on a genuinely full file system (a small tmpfs,
tests/support/full_disk.py); http(s):// and s3:// against real loopback servers out of room."""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import TransientJobError
from publishing.pipeline.base import Artifact
from publishing.pipeline.stores.file import FileStore
from publishing.pipeline.stores.http import HttpStore
from publishing.pipeline.stores.s3 import S3Store
from tests.support.full_disk import on_full_disk
from tests.support.http import ScriptedReceiver
from tests.support.s3 import Scripted
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


# --- http(s):// ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    # requests honours proxy variables; the local receivers must be reached directly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def _submit_over_http(artifact: Artifact, url: str) -> Any:
    store = HttpStore(allow_private=True, timeout=10)
    return store.submit(artifact, target_url=url, publishing_id=PUBLISHING_ID, origin=ORIGIN)


def test_a_receiver_out_of_storage_answering_507_is_transient_and_the_retry_stores(tmp_path):
    # Given a receiver whose storage is full: 507 Insufficient Storage, "a temporary condition" (RFC 4918)
    artifact = make_artifact(tmp_path / "pub.tar.gz")
    with ScriptedReceiver(path="/upload", statuses=[507], status=201) as receiver:
        receiver.error_body = b"no space left for the upload"

        # When
        with pytest.raises(TransientJobError) as excinfo:
            _submit_over_http(artifact, receiver.url)

        # Then it is retried later, and says why
        assert excinfo.value.code == "TARGET_UNAVAILABLE"
        assert excinfo.value.detail.endswith("answered 507: no space left for the upload")
        # And once the receiver has room again, the retry stores the archive
        assert _submit_over_http(artifact, receiver.url).uri == receiver.url
        assert [request.body for request in receiver.requests] == [artifact.path.read_bytes()] * 2


class _ResettingReceiver:
    """A loopback receiver that reads `keep` bytes of the first connection's upload, then resets it
    (RST, as a receiver killed when its disk fills); `received` counts what it read."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.received = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/upload"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            connection, _ = self.server.accept()
        except OSError:
            return  # closed by the fixture: the test never connected
        while self.received < self.keep and (chunk := connection.recv(65536)):
            self.received += len(chunk)
        # A zero linger time makes close() send a reset in place of an orderly end.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()


@pytest.fixture
def resetting_receiver() -> Iterator[_ResettingReceiver]:
    receiver = _ResettingReceiver(keep=256 * 1024)
    receiver.thread.start()
    try:
        yield receiver
    finally:
        # Wakes an accept() still waiting, when the test failed before it connected.
        with contextlib.suppress(OSError):
            receiver.server.shutdown(socket.SHUT_RDWR)
        receiver.server.close()
        receiver.thread.join()


def test_a_connection_reset_halfway_through_the_upload_is_transient(tmp_path, resetting_receiver):
    # Given an archive far larger than what the socket buffers hold, and a receiver that resets the
    # connection once it read 256 KiB of it
    artifact = make_artifact(tmp_path / "pub.tar.gz", random.randbytes(32 * 1024 * 1024))  # noqa: S311

    # When
    with pytest.raises(TransientJobError) as excinfo:
        _submit_over_http(artifact, resetting_receiver.url)

    # Then the cut-off upload is retried later
    assert excinfo.value.code == "TARGET_UNAVAILABLE"
    assert "unreachable" in excinfo.value.detail
    # And it was cut off halfway indeed
    assert 256 * 1024 <= resetting_receiver.received < artifact.size


# --- s3:// ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(507, "XMinioStorageFull", id="minio-disks-full"),
        pytest.param(400, "XMinioAdminBucketQuotaExceeded", id="minio-bucket-quota"),
        pytest.param(400, "QuotaExceeded", id="quota"),
    ],
)
@pytest.mark.usefixtures("s3_credentials")
def test_an_s3_store_out_of_room_is_transient_and_the_retry_publishes(
    tmp_path, s3_proxy, s3_bucket, status, code
):
    # Given an S3 API that refuses the archive for want of room (its disks, or the bucket's quota)
    artifact = make_artifact(tmp_path / "pub.tar.gz")
    s3_proxy.script = [
        Scripted("PUT", status, code, "Storage backend has reached its minimum free drive threshold.")
    ]
    store = S3Store(roots=[f"s3://{s3_bucket}"], endpoint_url=s3_proxy.url, timeout=5)

    # When
    with pytest.raises(TransientJobError) as excinfo:
        store.submit(
            artifact, target_url=f"s3://{s3_bucket}/sites", publishing_id=PUBLISHING_ID, origin=ORIGIN
        )

    # Then it is retried later, and says why
    assert excinfo.value.code == "TARGET_UNAVAILABLE"
    assert f"{status} {code}" in excinfo.value.detail
    # And once there is room, the retry publishes
    submission = store.submit(
        artifact, target_url=f"s3://{s3_bucket}/sites", publishing_id=PUBLISHING_ID, origin=ORIGIN
    )
    assert submission.uri == f"s3://{s3_bucket}/sites/{ARCHIVE}"
