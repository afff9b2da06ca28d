"""Writing a file's pages to disk while it grows, so that the fsync that makes it durable has little left.

Linux's sync_file_range(SYNC_FILE_RANGE_WRITE) starts the write of a range without waiting for it and
keeps the pages in the cache (posix_fadvise's DONTNEED would also drop them). Python has no binding
for it; where libc has none either, nothing is started early and the fsync does it all.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    loaded: Callable[[int, int, int, int], int] = function
    return loaded


_sync_file_range = _load()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing `length` bytes of `fd` from `offset` to disk, without waiting for them.

    A hint: its failure (a file system without it) changes nothing, the fsync still writes the range.
    """
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)
