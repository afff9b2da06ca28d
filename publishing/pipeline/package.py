"""Package step: a deterministic tar.gz of the build's artifact path.

Same content, same bytes: entries are sorted, and times, owners and modes are normalised, so the
archive's sha256 identifies the content and a re-run of the same commit yields the same checksum.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import os
import stat
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline.base import Artifact

logger = logging.getLogger(__name__)

# 1980-01-01T00:00:00Z: the floor of zip timestamps, and later than 0 which some tools mistake for "unset".
ARCHIVE_MTIME = 315532800
DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644
EXCLUDED_NAMES = frozenset({".git"})
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def resolve_artifact_path(source: Path, artifact_path: str) -> Path:
    """The real path of `artifact_path` inside `source`; PermanentJobError if it escapes or is missing.

    An empty path or "." names `source` itself.
    """
    pure = PurePosixPath(artifact_path.strip() or ".")
    if "\x00" in artifact_path or pure.is_absolute() or ".." in pure.parts:
        raise PermanentJobError(
            f"artifact path {artifact_path!r} must be relative and stay inside the checkout",
            code="ARTIFACT_PATH_INVALID",
        )
    root = source.resolve()
    # resolve() follows symlinks, so a link pointing out of the checkout lands outside `root`.
    resolved = (root / pure).resolve()
    if not resolved.is_relative_to(root):
        raise PermanentJobError(
            f"artifact path {artifact_path!r} leads outside the checkout", code="ARTIFACT_PATH_INVALID"
        )
    if not resolved.exists():
        raise PermanentJobError(f"artifact path {artifact_path!r} does not exist", code="ARTIFACT_NOT_FOUND")
    return resolved


def _tar_info(name: str, st: os.stat_result) -> tarfile.TarInfo | None:
    """A normalised TarInfo for a file, directory or symlink; None for any other kind of file."""
    info = tarfile.TarInfo(name)
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = DIR_MODE
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.mode = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE
        info.size = st.st_size
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.mode = FILE_MODE
    else:
        return None
    return info


def _walk(root: Path, skip: Path) -> list[tuple[str, Path]]:
    """Every (relative POSIX name, path) below `root`, sorted by name, minus `.git` and `skip`."""
    found: list[tuple[str, Path]] = []
    pending = [root]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.name in EXCLUDED_NAMES or path == skip:
                    continue
                found.append((path.relative_to(root).as_posix(), path))
                # is_dir(follow_symlinks=False): a symlinked directory is stored as a link, not walked.
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
    # A name sorts after its parent directory's, so directories precede their contents.
    found.sort(key=lambda item: item[0])
    return found


def _add(tar: tarfile.TarFile, name: str, path: Path) -> None:
    st = path.lstat()
    info = _tar_info(name, st)
    if info is None:
        logger.info("Skipping special file %s in artifact", name)
        return
    if info.type == tarfile.SYMTYPE:
        info.linkname = os.readlink(path)
        tar.addfile(info)
    elif info.type == tarfile.REGTYPE:
        with path.open("rb") as fh:
            tar.addfile(info, fh)
    else:
        tar.addfile(info)


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def package(source: Path, artifact_path: str, *, out_dir: Path, name: str) -> Artifact:
    """Write `out_dir/<name>.tar.gz` from `artifact_path` in `source` and return it with its sha256 and size.

    A directory is archived with names relative to it; a single file is stored under its own name.
    """
    root = resolve_artifact_path(source, artifact_path)
    target = out_dir / f"{name}.tar.gz"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Never archive the output folder into itself when it lies inside the artifact path.
        skip = out_dir.resolve()
        if root.is_dir():
            entries = _walk(root, skip)
        else:
            entries = [(PurePosixPath(artifact_path).name or root.name, root)]
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
        tmp = Path(tmp_name)
        try:
            with (
                os.fdopen(fd, "wb") as raw,
                # filename="" and mtime=0 keep the gzip header free of names and times.
                gzip.GzipFile(filename="", mtime=0, fileobj=raw, mode="wb") as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
            ):
                for entry_name, path in entries:
                    _add(tar, entry_name, path)
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        digest = _sha256(target)
        size = target.stat().st_size
    except OSError as exc:
        if exc.errno in _NO_SPACE_ERRNOS:
            raise TransientJobError(
                f"no space left to write the archive: {exc}", code="PACKAGE_NO_SPACE"
            ) from exc
        raise PermanentJobError(f"packaging failed: {exc}", code="PACKAGE_FAILED") from exc
    logger.info(
        "Packaged %s (%s entries) into %s: %s bytes, sha256 %s", root, len(entries), target, size, digest
    )
    return Artifact(path=target, sha256=digest, size=size)
