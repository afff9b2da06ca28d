"""file:// store: a local directory under one of PUBLISHING_FILE_STORE_ROOTS.

Idempotent per publishing: files are keyed by publishing id, and an identical archive is not
rewritten.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import grp
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Self
from urllib.parse import SplitResult, unquote, urlsplit

from django.conf import settings

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline.base import Artifact, Origin, Submission
from publishing.pipeline.locks import try_lock
from publishing.pipeline.network import split_url
from publishing.pipeline.stores.base import artifact_names, manifest

logger = logging.getLogger(__name__)

# OSErrors worth a retry: the store may have room or be reachable again later.
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE}
)
COPY_BUFFER = 1024 * 1024
# Why a hard link from the workspace to the store fails where a copy works: another file system, one
# without hard links, too many links, a kernel's protected_hardlinks.
NO_LINK_ERRNOS = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EACCES})


class FileStore:
    """Writes `<target>/<owner id>/<project slug>/<publishing id>.tar.gz` and `.json`.

    `roots` are the folders targets must lie under (none: no file:// target); the folders and
    files are the worker's user's only, or also readable by the group `group` when set.
    """

    def __init__(self, *, roots: Sequence[str], group: str = "") -> None:
        self.roots = list(roots)
        self.group = group

    @classmethod
    def from_settings(cls) -> Self:
        return cls(roots=settings.PUBLISHING_FILE_STORE_ROOTS, group=settings.PUBLISHING_STORE_GROUP)

    def validate(self, url: str) -> None:
        _check_store_root(
            _file_target_dir(split_url(url, what="target URL", code="TARGET_INVALID")), self.roots
        )

    def submit(
        self, artifact: Artifact, *, target_url: str, publishing_id: str, origin: Origin
    ) -> Submission:
        self.validate(target_url)
        return _submit_to_directory(
            artifact,
            _file_target_dir(urlsplit(target_url)),
            publishing_id=publishing_id,
            origin=origin,
            access=_StoreAccess.of(self.group),
        )


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
def _stage(
    final: Path,
    access: _StoreAccess,
    *,
    write: Callable[[IO[bytes]], object] | None = None,
    link_to: Path | None = None,
) -> Iterator[Path]:
    """A temporary file beside `final`, written by `write` (or a new hard link to `link_to`), fsynced and
    given the store's access; locked (flock) for the whole block, so no other submit's
    `_remove_leftovers` takes it for a leftover, and removed at its end unless renamed into place in it
    (a full disk included)."""
    fd, tmp = _locked_temp(final, link_to=link_to)
    try:
        if write is not None:
            with os.fdopen(os.dup(fd), "wb") as fh:
                write(fh)
        os.fsync(fd)
        access.apply(tmp, folder=False)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def _stage_archive(staging: contextlib.ExitStack, artifact: Path, final: Path, access: _StoreAccess) -> Path:
    """The archive staged beside `final` for the block of `staging`: a hard link to `artifact` where the
    two lie on one file system (nothing is copied, and the package step already wrote it to disk), else
    a copy."""
    try:
        return staging.enter_context(_stage(final, access, link_to=artifact))
    except OSError as exc:
        if exc.errno not in NO_LINK_ERRNOS:
            raise
    src = staging.enter_context(artifact.open("rb"))
    return staging.enter_context(
        _stage(final, access, write=lambda dst: shutil.copyfileobj(src, dst, COPY_BUFFER))
    )


def _locked_temp(final: Path, *, link_to: Path | None = None) -> tuple[int, Path]:
    """A new temporary file beside `final` (a new hard link to `link_to`, when given), and an fd holding
    an exclusive flock on it. Another submit's
    `_remove_leftovers` may lock and remove the file between its creation and the flock: then a new one
    is made."""
    while True:
        if link_to is None:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        else:
            tmp_name = str(final.parent / f".{final.name}.{secrets.token_hex(6)}.tmp")
            os.link(link_to, tmp_name)
            fd = os.open(tmp_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _names(fd, Path(tmp_name)):
                return fd, Path(tmp_name)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _names(fd: int, path: Path) -> bool:
    """Whether `path` is still the name of the file open as `fd`."""
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _submit_to_directory(
    artifact: Artifact, base: Path, *, publishing_id: str, origin: Origin, access: _StoreAccess
) -> Submission:
    """Store `<base>/<owner id>/<project slug>/<id>.tar.gz` and `<id>.json` (`_store_pair`); skip an
    identical archive."""
    folders, file_name, manifest_name = artifact_names(origin, publishing_id)
    project_dir = base.joinpath(*folders)
    final = project_dir / file_name
    manifest_path = project_dir / manifest_name
    try:
        for folder in [*reversed(project_dir.parents), project_dir]:
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
                access.apply(folder, folder=True)  # only what this created: the group can walk down
        access.apply(project_dir, folder=True)
        _store_pair(artifact, final, manifest_path, access, publishing_id=publishing_id, origin=origin)
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientJobError(
                f"target directory {project_dir} unavailable: {exc}", code="TARGET_UNAVAILABLE"
            ) from exc
        raise PermanentJobError(
            f"target directory {project_dir} refused the artifact: {exc}", code="TARGET_REJECTED"
        ) from exc
    logger.info("Stored artifact of publishing %s at %s", publishing_id, final)
    return Submission(uri=final.absolute().as_uri(), ref=publishing_id)


def _store_pair(
    artifact: Artifact,
    final: Path,
    manifest_path: Path,
    access: _StoreAccess,
    *,
    publishing_id: str,
    origin: Origin,
) -> None:
    """Put the archive at `final` and its manifest at `manifest_path`, unless they are there already.

    Both are written in full to temporary files before either is renamed into place, so a full disk
    or any other write error leaves what a reader saw before, and no temporary file. A manifest is
    present only beside the archive it names: one naming another archive goes before the archive is
    replaced, and the new one comes last.
    """
    _remove_leftovers(final, manifest_path)
    # Each staged file stays locked until the block ends: after its rename into place, or its removal.
    with contextlib.ExitStack() as staging:
        new_archive: Path | None = None
        if _sha256_of(final) == artifact.sha256:
            logger.info("Artifact %s already stored with the same sha256; not rewriting it", final)
        else:
            new_archive = _stage_archive(staging, artifact.path, final, access)
        existing = _read_manifest(manifest_path)
        if new_archive is None and existing is not None and existing.get("sha256") == artifact.sha256:
            return
        content = manifest(artifact, publishing_id=publishing_id, origin=origin, file_name=final.name)
        new_manifest = staging.enter_context(
            _stage(manifest_path, access, write=lambda dst: dst.write(content))
        )
        if new_archive is not None:
            manifest_path.unlink(missing_ok=True)
            new_archive.replace(final)
            _fsync_directory(final.parent)
        new_manifest.replace(manifest_path)
        _fsync_directory(final.parent)


def _remove_leftovers(*finals: Path) -> None:
    """Remove the temporary files an earlier attempt left beside `finals` (a worker killed mid-copy):
    hidden, never taken for an archive, but as large as one, on a disk that may be full. A file whose
    writer still holds its lock is being written (by another attempt of the same publishing, a stale
    one or its successor) and stays; one that cannot be removed is only logged: it costs room, not the
    publishing."""
    for final in finals:
        for leftover in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
            try:
                _remove_unless_locked(leftover)
            except OSError as exc:
                logger.warning("Could not remove %s, left by an earlier attempt: %s", leftover, exc)


def _remove_unless_locked(leftover: Path) -> None:
    """Remove `leftover` unless its writer holds its lock; OSError if it cannot be opened or removed."""
    try:
        fd = try_lock(leftover, folder=False, create=False)
    except FileNotFoundError:
        return  # its writer renamed or removed it meanwhile
    if fd is None:
        logger.info("Leaving %s: another attempt is still writing it", leftover)
        return
    try:
        # Removed while locked: a writer that has just created it sees it gone once it has the lock.
        if _names(fd, leftover):
            logger.warning("Removing %s, left by an earlier attempt that never finished its copy", leftover)
            leftover.unlink()
    finally:
        os.close(fd)
