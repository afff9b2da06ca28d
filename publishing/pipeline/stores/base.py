"""What every store is (`Store`) and the layout the stores share: where an artifact and its manifest go."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol, Self

from publishing.exceptions import PermanentJobError
from publishing.pipeline.base import Artifact, Origin, Submission

# Every artifact is the package step's tar.gz.
ARCHIVE_SUFFIX = ".tar.gz"


class Store(Protocol):
    """One kind of store, picked by the target URL's scheme (`publishing.pipeline.stores.STORES`).

    `validate` judges a URL's form and the operator's policy without touching the network: the
    web tier runs it when a project is saved. `submit` runs it again, then delivers; both raise
    PermanentJobError, `submit` also TransientJobError (retried). A submit is safe to repeat for
    the same publishing.
    """

    @classmethod
    def from_settings(cls) -> Self: ...

    def validate(self, url: str) -> None: ...

    def submit(
        self, artifact: Artifact, *, target_url: str, publishing_id: str, origin: Origin
    ) -> Submission: ...


def path_component(value: str, what: str) -> str:
    """`value` if it is safe as one file name; it becomes part of a path on the store."""
    if not value or value in (".", "..") or "/" in value or "\x00" in value or value.startswith("."):
        raise PermanentJobError(f"{what} {value!r} cannot be used as a file name", code="TARGET_INVALID")
    return value


def artifact_names(origin: Origin, publishing_id: str) -> tuple[list[str], str, str]:
    """The folders below a store's base (`<owner id>/<project slug>`), the archive's name and the manifest's.

    The owner's folder comes first: slugs are unique per owner only, and two owners' projects
    must never share a folder, whatever they are called.
    """
    folders = [
        path_component(origin.owner_id, "owner id"),
        path_component(origin.project_slug, "project slug"),
    ]
    name = path_component(publishing_id, "publishing id")
    return folders, f"{name}{ARCHIVE_SUFFIX}", f"{name}.json"


def manifest(
    artifact: Artifact, *, publishing_id: str, origin: Origin, file_name: str, **extra: Any
) -> bytes:
    """The JSON written beside an archive: whose it is, its checksum and size, the commit it was built
    from (`commit_sha`, `commit_subject`, `commit_author`, when known), when it was submitted."""
    data = {
        "publishing_id": publishing_id,
        "project": origin.project_slug,
        "project_id": origin.project_id,
        "owner_id": origin.owner_id,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "file": file_name,
        "submitted_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **commit_fields(artifact),
        **extra,
    }
    return json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def commit_fields(artifact: Artifact) -> dict[str, str]:
    """The commit an artifact was built from, as the manifest names it; nothing when it is unknown."""
    commit = artifact.commit
    if commit is None:
        return {}
    return {"commit_sha": commit.sha, "commit_subject": commit.subject, "commit_author": commit.author}
