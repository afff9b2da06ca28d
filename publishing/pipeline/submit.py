"""Submit step: deliver the archive to the target store, a local directory (file://) or an HTTP endpoint.

Both are idempotent per publishing: the file store keys files by publishing id and skips a rewrite
of identical content, the HTTP store receives the publishing id as `Idempotency-Key`.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline.base import Artifact, Origin, Submission
from publishing.pipeline.network import answer_error, check_host, post, split_url
from publishing.redaction import redact_credentials

logger = logging.getLogger(__name__)

# OSErrors worth a retry: the store may have room or be reachable again later.
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE}
)
# How much of a response body is read: enough for a JSON answer or an error excerpt, never a flood.
RESPONSE_READ_LIMIT = 64 * 1024
COPY_BUFFER = 1024 * 1024


def _file_target_dir(parts: SplitResult) -> Path:
    """The directory a file:// URL names; TARGET_INVALID for anything but an absolute path."""
    path = unquote(parts.path)
    pure = PurePosixPath(path)
    if (
        parts.netloc not in ("", "localhost")
        or parts.query
        or parts.fragment
        or not pure.is_absolute()
        or ".." in pure.parts
        or "\x00" in path
    ):
        raise PermanentJobError("a file:// target must be file:///absolute/directory", code="TARGET_INVALID")
    return Path(path)


def _check_store_root(directory: Path, roots: Sequence[str]) -> None:
    """A file:// target must lie under one of `roots` (PUBLISHING_FILE_STORE_ROOTS): the worker
    writes there with its own rights, which reach much further than any user's."""
    if not roots:
        raise PermanentJobError(
            "file:// targets are not allowed here (PUBLISHING_FILE_STORE_ROOTS names no folder)",
            code="TARGET_NOT_ALLOWED",
        )
    if not any(directory.is_relative_to(root) for root in roots):
        raise PermanentJobError(
            f"a file:// target must lie under {' or '.join(roots)}", code="TARGET_NOT_ALLOWED"
        )


def validate_target_url(url: str, *, allow_private: bool, store_roots: Sequence[str]) -> None:
    """Check a target URL's syntax and policy without touching the network; raise PermanentJobError.

    `store_roots` are the folders file:// targets may lie under (none: no file:// targets).
    """
    parts = split_url(url, what="target URL", code="TARGET_INVALID")
    scheme = parts.scheme.lower()
    if scheme == "file":
        _check_store_root(_file_target_dir(parts), store_roots)
        return
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise PermanentJobError("target URL has no host", code="TARGET_INVALID")
        check_host(parts.hostname, allow_private=allow_private, code="TARGET_NOT_ALLOWED", resolve=False)
        return
    raise PermanentJobError(f"unsupported target URL scheme {scheme!r}", code="TARGET_INVALID")


def submit(
    artifact: Artifact,
    *,
    target_url: str,
    publishing_id: str,
    origin: Origin,
    timeout: int,
    allow_private: bool,
    store_roots: Sequence[str],
    store_group: str = "",
) -> Submission:
    """Deliver `artifact` to `target_url`; raise TransientJobError (retry) or PermanentJobError on failure.

    A file:// target must lie under one of `store_roots`. Its folders and files are the
    worker's user's only, or also readable by the group `store_group` when set.
    """
    validate_target_url(target_url, allow_private=allow_private, store_roots=store_roots)
    parts = urlsplit(target_url)
    if parts.scheme.lower() == "file":
        return _submit_to_directory(
            artifact,
            _file_target_dir(parts),
            publishing_id=publishing_id,
            origin=origin,
            access=_StoreAccess.of(store_group),
        )
    check_host(parts.hostname or "", allow_private=allow_private, code="TARGET_NOT_ALLOWED", resolve=True)
    return _submit_over_http(
        artifact, target_url, publishing_id=publishing_id, timeout=timeout, allow_private=allow_private
    )


# --- file:// -----------------------------------------------------------------


def _path_component(value: str, what: str) -> str:
    """`value` if it is safe as one file name; it becomes part of a path on the store."""
    if not value or value in (".", "..") or "/" in value or "\x00" in value or value.startswith("."):
        raise PermanentJobError(f"{what} {value!r} cannot be used as a file name", code="TARGET_INVALID")
    return value


def _sha256_of(path: Path) -> str | None:
    """The sha256 of the file at `path`, or None when there is no such file."""
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _StoreAccess:
    """Who may read the store besides the worker's user: nobody, or one group."""

    gid: int = -1

    @classmethod
    def of(cls, group: str) -> _StoreAccess:
        if not group:
            return cls()
        try:
            return cls(gid=int(group) if group.isdigit() else grp.getgrnam(group).gr_gid)
        except KeyError:
            raise PermanentJobError(
                f"store group {group!r} (PUBLISHING_STORE_GROUP) does not exist", code="TARGET_REJECTED"
            ) from None

    def apply(self, path: Path, *, folder: bool) -> None:
        if self.gid < 0:
            path.chmod(0o700 if folder else 0o600)
            return
        os.chown(path, -1, self.gid)
        path.chmod(0o750 if folder else 0o640)


@contextlib.contextmanager
def _atomic_writer(final: Path, access: _StoreAccess) -> Iterator[IO[bytes]]:
    """A temporary file beside `final` that replaces it, flushed and fsynced, only if the block succeeds."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        access.apply(tmp, folder=False)
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(final.parent)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _submit_to_directory(
    artifact: Artifact, base: Path, *, publishing_id: str, origin: Origin, access: _StoreAccess
) -> Submission:
    """Write `<base>/<owner id>/<project slug>/<id>.tar.gz`, then `<id>.json`, atomically; skip an
    identical archive.

    The owner's folder comes first: slugs are unique per owner only, and two owners' projects
    must never share a folder, whatever they are called.
    """
    owner_dir = base / _path_component(origin.owner_id, "owner id")
    project_dir = owner_dir / _path_component(origin.project_slug, "project slug")
    file_name = f"{_path_component(publishing_id, 'publishing id')}.tar.gz"
    final = project_dir / file_name
    manifest_path = project_dir / f"{publishing_id}.json"
    try:
        for folder in [*reversed(project_dir.parents), project_dir]:
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
                access.apply(folder, folder=True)  # only what this created: the group can walk down
        access.apply(project_dir, folder=True)
        if _sha256_of(final) == artifact.sha256:
            logger.info("Artifact %s already stored with the same sha256; not rewriting it", final)
        else:
            with artifact.path.open("rb") as src, _atomic_writer(final, access) as dst:
                shutil.copyfileobj(src, dst, COPY_BUFFER)
        # The manifest comes last: its presence says the archive beside it is complete.
        existing = _read_manifest(manifest_path)
        if existing is None or existing.get("sha256") != artifact.sha256:
            manifest = {
                "publishing_id": publishing_id,
                "project": origin.project_slug,
                "project_id": origin.project_id,
                "owner_id": origin.owner_id,
                "sha256": artifact.sha256,
                "size": artifact.size,
                "file": file_name,
                "submitted_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
            with _atomic_writer(manifest_path, access) as dst:
                dst.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientJobError(
                f"target directory unavailable: {exc}", code="TARGET_UNAVAILABLE"
            ) from exc
        raise PermanentJobError(
            f"target directory refused the artifact: {exc}", code="TARGET_REJECTED"
        ) from exc
    logger.info("Stored artifact of publishing %s at %s", publishing_id, final)
    return Submission(uri=final.absolute().as_uri(), ref=publishing_id)


# --- http(s):// --------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _first_string(data: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _submit_over_http(
    artifact: Artifact, target_url: str, *, publishing_id: str, timeout: int, allow_private: bool
) -> Submission:
    """POST the archive; classify the answer into a Submission, a transient or a permanent error.

    A 307 or 308 is followed (the archive is sent again); another redirect is an answer like any 3xx.
    """
    safe_url = redact_credentials(target_url)
    headers = {
        "Content-Type": "application/gzip",
        "Idempotency-Key": publishing_id,
        "X-Checksum-SHA256": artifact.sha256,
        "X-Publishing-Id": publishing_id,
    }
    try:
        fh = artifact.path.open("rb")
    except OSError as exc:
        raise PermanentJobError(f"artifact file cannot be read: {exc}", code="ARTIFACT_NOT_FOUND") from exc
    label = f"target {safe_url}"
    with fh:
        answer = post(
            target_url,
            data=fh,
            headers=headers,
            timeout=timeout,
            allow_private=allow_private,
            read_limit=RESPONSE_READ_LIMIT,
            label=label,
            code_prefix="TARGET",
        )
    logger.info("Target %s answered %s for publishing %s", safe_url, answer.status, publishing_id)
    if error := answer_error(answer, label=label, code_prefix="TARGET"):
        raise error
    data = _json_object(answer.body)
    location = answer.headers.get("Location") or _first_string(data, "uri", "url")
    # Relative locations are resolved against the URL that answered (after any redirect);
    # credentials in the target URL are not kept.
    uri = redact_credentials(urljoin(answer.url, location) if location else answer.url)
    ref = _first_string(data, "id", "ref") or answer.headers.get("X-Submission-Id", "")
    return Submission(uri=uri, ref=ref)
