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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline.base import Artifact
from publishing.pipeline.writeback import start_writeback

logger = logging.getLogger(__name__)

# 1980-01-01T00:00:00Z: the floor of zip timestamps, and later than 0 which some tools mistake for "unset".
ARCHIVE_MTIME = 315532800
DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644
EXCLUDED_NAMES = frozenset({".git"})
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in for a file must not block the open.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Bounds on what a build may leave to package: each entry is opened from the root one component at
# a time, so a 30 000-deep chain of directories would cost hundreds of millions of opens.
MAX_DEPTH = 64
MAX_ENTRIES = 100_000
# gzip -6's level: within 0.8 % of level 9's size on a site of text pages, in two thirds of its time.
DEFAULT_COMPRESSION_LEVEL = 6
# Bytes read from a file, and handed to the compressor, at a time: 4 times tarfile's default, and under
# glibc's mmap threshold (128 KiB), so each chunk reuses heap memory; 1 MiB chunks are mapped afresh
# each time: 470,000 page faults and 1.5 s more system time on a 1 GiB artifact, for no gain.
COPY_CHUNK = 64 * 1024
# The archive's write buffer, allocated once: few write calls for the compressor's small outputs.
WRITE_BUFFER = 1024 * 1024
# How much of the archive at a time is started on its way to disk while it is written.
WRITEBACK_STEP = 8 * 1024 * 1024


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
    # Named, or reached through a link the build made: git's folder holds the remote's configuration.
    if EXCLUDED_NAMES.intersection(pure.parts) or EXCLUDED_NAMES.intersection(
        resolved.relative_to(root).parts
    ):
        raise PermanentJobError(
            f"artifact path {artifact_path!r} is or lies inside .git, which is never published",
            code="ARTIFACT_PATH_INVALID",
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


@dataclass(frozen=True)
class _Entry:
    name: str
    # The path below the artifact root, one component each.
    parts: tuple[str, ...]
    # lstat() when the tree was scanned.
    st: os.stat_result


def _open_beneath(root_fd: int, parts: Sequence[str], *, flags: int) -> int:
    """Open `parts` below `root_fd`, one component at a time and following no symlink; the caller closes it.

    A path walk by name would follow a directory swapped for a symlink by a build process still running
    (one that left its process group); this one fails instead.
    """
    fd = root_fd
    try:
        for index, part in enumerate(parts):
            opened = os.open(part, flags if index == len(parts) - 1 else _OPEN_DIR, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = opened
    except BaseException as exc:
        if fd != root_fd:
            os.close(fd)
        if isinstance(exc, OSError) and exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PermanentJobError(
                f"artifact entry {'/'.join(parts)!r} was replaced by a symlink while being packaged",
                code="PACKAGE_FAILED",
            ) from exc
        raise
    return fd if parts else os.dup(root_fd)


def _scan(root_fd: int, skip: tuple[int, int]) -> list[_Entry]:
    """Every entry below `root_fd`, sorted by name, minus `.git` and the directory `skip` (dev, inode)."""
    found: list[_Entry] = []
    pending: list[tuple[str, ...]] = [()]
    while pending:
        parts = pending.pop()
        dir_fd = _open_beneath(root_fd, parts, flags=_OPEN_DIR)
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    if entry.name in EXCLUDED_NAMES or (st.st_dev, st.st_ino) == skip:
                        continue
                    child = (*parts, entry.name)
                    if len(child) > MAX_DEPTH or len(found) >= MAX_ENTRIES:
                        raise PermanentJobError(
                            f"the artifact is deeper than {MAX_DEPTH} levels or holds more than "
                            f"{MAX_ENTRIES} entries",
                            code="ARTIFACT_TOO_LARGE",
                        )
                    found.append(_Entry("/".join(child), child, st))
                    # A symlinked directory is stored as a link, never walked.
                    if stat.S_ISDIR(st.st_mode):
                        pending.append(child)
        finally:
            os.close(dir_fd)
    # A name sorts after its parent directory's, so directories precede their contents.
    found.sort(key=lambda item: item.name)
    return found


def _check_link(entry: _Entry, linkname: str, root: Path) -> None:
    """Refuse a symlink that resolves outside the artifact: it would dangle, or point elsewhere, once
    unpacked (tarfile's "data" filter refuses such archives)."""
    target = Path(os.path.realpath(root.joinpath(*entry.parts[:-1], linkname)))
    if os.path.isabs(linkname) or not target.is_relative_to(root):
        raise PermanentJobError(
            f"artifact entry {entry.name!r} is a symlink to {linkname!r}, outside the artifact",
            code="ARTIFACT_PATH_INVALID",
        )


def _add(tar: tarfile.TarFile, root_fd: int, root: Path, entry: _Entry, owner: int) -> None:
    """Append `entry`, its content read through a descriptor opened beneath `root_fd`."""
    info = _tar_info(entry.name, entry.st)
    if info is None:
        logger.info("Skipping special file %s in artifact", entry.name)
        return
    if info.type == tarfile.SYMTYPE:
        parent_fd = _open_beneath(root_fd, entry.parts[:-1], flags=_OPEN_DIR)
        try:
            info.linkname = os.readlink(entry.parts[-1], dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        _check_link(entry, info.linkname, root)
        tar.addfile(info)
    elif info.type == tarfile.REGTYPE:
        with os.fdopen(_open_beneath(root_fd, entry.parts, flags=_OPEN_FILE), "rb") as fh:
            _add_file(tar, info, fh, entry, owner)
    else:
        tar.addfile(info)


def _add_file(tar: tarfile.TarFile, info: tarfile.TarInfo, fh: IO[bytes], entry: _Entry, owner: int) -> None:
    st = os.fstat(fh.fileno())
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (entry.st.st_dev, entry.st.st_ino):
        raise PermanentJobError(
            f"artifact entry {entry.name!r} changed while being packaged", code="PACKAGE_FAILED"
        )
    # A second name for a file of another owner is how a build would smuggle in a file from outside
    # the checkout (where fs.protected_hardlinks is off); the build's own hard links are fine.
    if st.st_nlink > 1 and st.st_uid != owner:
        raise PermanentJobError(
            f"artifact entry {entry.name!r} is a hard link to a file from outside the build",
            code="ARTIFACT_PATH_INVALID",
        )
    info.size = st.st_size
    tar.addfile(info, fh)


class _HashingWriter:
    """Passes bytes on to `raw`, counting them and hashing them with sha256 on the way: the archive's
    checksum without reading the file back. What the buffer has handed to the kernel starts its way to
    disk every WRITEBACK_STEP bytes, during the compression rather than in the fsync after it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0
        self._written_back = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        written = self._raw.write(data)
        # Past the buffer's size, the bytes surely left it for the kernel.
        handed_over = self.size - WRITE_BUFFER
        if handed_over - self._written_back >= WRITEBACK_STEP:
            start_writeback(self._raw.fileno(), self._written_back, handed_over - self._written_back)
            self._written_back = handed_over
        return written

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def package(
    source: Path,
    artifact_path: str,
    *,
    out_dir: Path,
    name: str,
    compression_level: int = DEFAULT_COMPRESSION_LEVEL,
) -> Artifact:
    """Write `out_dir/<name>.tar.gz` from `artifact_path` in `source` and return it with its sha256 and size.

    A directory is archived with names relative to it; a single file is stored under its own name.
    Nothing is read through a symlink: links are stored as links, and must point inside the artifact.
    `compression_level` is gzip's, 0 (stored as is) to 9; the same content and level give the same bytes.
    """
    if not 0 <= compression_level <= 9:
        raise ValueError(f"compression level {compression_level} is not between 0 and 9")
    root = resolve_artifact_path(source, artifact_path)
    target = out_dir / f"{name}.tar.gz"
    opened: list[int] = []
    try:
        base_fd, entries, owner = _collect(source, artifact_path, root, out_dir, opened)
        digest, size = _write_archive(
            target, entries, base_fd, root, owner, name=name, level=compression_level
        )
    except OSError as exc:
        if exc.errno in _NO_SPACE_ERRNOS:
            raise TransientJobError(
                f"no space left to write the archive: {exc}", code="PACKAGE_NO_SPACE"
            ) from exc
        raise PermanentJobError(f"packaging failed: {exc}", code="PACKAGE_FAILED") from exc
    finally:
        for opened_fd in opened:
            os.close(opened_fd)
    logger.info(
        "Packaged %s (%s entries) into %s: %s bytes, sha256 %s", root, len(entries), target, size, digest
    )
    return Artifact(path=target, sha256=digest, size=size)


def _collect(
    source: Path, artifact_path: str, root: Path, out_dir: Path, opened: list[int]
) -> tuple[int, list[_Entry], int]:
    """(the descriptor entries are opened beneath, the entries, the checkout's owner) of the artifact at
    `root`; creates `out_dir`. Each descriptor it opens is appended to `opened`, for the caller to close."""
    relative = root.relative_to(source.resolve()).parts
    opened.append(source_fd := os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    # The real path again, one component at a time: a symlink swapped in meanwhile fails here.
    opened.append(parent_fd := _open_beneath(source_fd, relative[:-1], flags=_OPEN_DIR))
    root_st = (
        os.stat(relative[-1], dir_fd=parent_fd, follow_symlinks=False) if relative else os.fstat(source_fd)
    )
    owner = os.fstat(source_fd).st_uid
    out_dir.mkdir(parents=True, exist_ok=True)
    if stat.S_ISDIR(root_st.st_mode):
        opened.append(base_fd := _open_beneath(parent_fd, relative[-1:], flags=_OPEN_DIR))
        # Never archive the output folder into itself when it lies inside the artifact path.
        out_st = out_dir.stat()
        return base_fd, _scan(base_fd, skip=(out_st.st_dev, out_st.st_ino)), owner
    if stat.S_ISREG(root_st.st_mode):
        entry = _Entry(PurePosixPath(artifact_path).name or root.name, relative[-1:], root_st)
        return parent_fd, [entry], owner
    raise PermanentJobError(
        f"artifact path {artifact_path!r} is neither a file nor a directory",
        code="ARTIFACT_PATH_INVALID",
    )


def _write_archive(
    target: Path, entries: list[_Entry], base_fd: int, root: Path, owner: int, *, name: str, level: int
) -> tuple[str, int]:
    """Write `entries` to `target` through a temporary file beside it, replaced into place once whole;
    return its sha256 and size, taken from the bytes as they are written."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=WRITE_BUFFER) as raw:
            out = _HashingWriter(raw)
            with (
                # filename="" and mtime=0 keep the gzip header free of names and times.
                gzip.GzipFile(filename="", mtime=0, fileobj=out, mode="wb", compresslevel=level) as gz,
                tarfile.TarFile(
                    fileobj=gz, mode="w", format=tarfile.GNU_FORMAT, copybufsize=COPY_CHUNK
                ) as tar,
            ):
                for entry in entries:
                    _add(tar, base_fd, root, entry, owner)
            # On disk before it is handed on: a write error shows here, and the store that keeps
            # this file (a link to it, where it can) finds nothing left to write.
            raw.flush()
            os.fdatasync(raw.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out.hexdigest(), out.size
