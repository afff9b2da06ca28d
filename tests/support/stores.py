"""What the tests of the stores share: a publishing's ids and an archive to submit."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from publishing.pipeline.base import Artifact, Commit, Origin

PUBLISHING_ID = "3f0c6f7e-9a1b-4c2d-8e5f-0a1b2c3d4e5f"
ORIGIN = Origin(owner_id="42", project_id="9b2f4c1e-0d3a-4e5f-8a7b-6c5d4e3f2a1b", project_slug="my-site")
# What a checkout read: a subject and an author that are not ASCII.
COMMIT = Commit(
    sha="3b18e512dba79e4c8300dd08aeb37f8e728b8dad",
    subject="Café: add the pricing page",
    author="Zoë Example <zoe@example.com>",
)
# Looks like a gzip stream, and is long enough to take more than one read.
ARCHIVE_BYTES = b"\x1f\x8b" + bytes(range(256)) * 40


def make_artifact(path: Path, content: bytes = ARCHIVE_BYTES, *, commit: Commit | None = None) -> Artifact:
    """`content` written to `path`, as the runner hands it over (with its sha256, size and commit)."""
    path.write_bytes(content)
    return Artifact(path=path, sha256=hashlib.sha256(content).hexdigest(), size=len(content), commit=commit)


def fail_if_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("must not be called")
