"""The package step starts its archive's way to disk while it writes it, and ends it on disk."""

from __future__ import annotations

import importlib
import os
import random
from pathlib import Path

import pytest

from publishing.pipeline import writeback
from publishing.pipeline.package import WRITE_BUFFER, WRITEBACK_STEP, package

# The module (publishing.pipeline re-exports its function under the same name).
package_module = importlib.import_module("publishing.pipeline.package")


def test_start_writeback_takes_a_real_file_and_ignores_an_empty_range(tmp_path: Path) -> None:
    # Given a file with dirty pages
    path = tmp_path / "file"
    path.write_bytes(b"x" * 1024 * 1024)
    fd = os.open(path, os.O_RDWR)
    try:
        # When its writeback is started, and an empty range is asked for
        writeback.start_writeback(fd, 0, 1024 * 1024)
        writeback.start_writeback(fd, 0, 0)
    finally:
        os.close(fd)
    # Then nothing changed in it (a hint, never a write of its own)
    assert path.read_bytes() == b"x" * 1024 * 1024
    # And the binding was found on this Linux
    assert writeback._sync_file_range is not None


def test_package_writes_its_archive_back_in_steps_and_syncs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a site of 40 MiB that does not compress, and the writeback and sync calls recorded
    site = tmp_path / "source" / "site"
    site.mkdir(parents=True)
    for number in range(5):
        (site / f"video-{number}.bin").write_bytes(random.Random(number).randbytes(8 * 1024 * 1024))  # noqa: S311 - incompressible, not secret
    ranges: list[tuple[int, int]] = []
    synced: list[int] = []
    monkeypatch.setattr(
        package_module, "start_writeback", lambda fd, offset, length: ranges.append((offset, length))
    )
    fdatasync = os.fdatasync

    def recording_fdatasync(fd: int) -> None:
        synced.append(fd)
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)

    # When it is packaged
    artifact = package(tmp_path / "source", "site", out_dir=tmp_path / "out", name="pub", compression_level=1)

    # Then the archive went to disk in contiguous steps of at least WRITEBACK_STEP, all of it but the
    # last buffer's worth, while it was written
    assert len(ranges) >= 4
    assert [offset for offset, _ in ranges] == [
        0,
        *(sum(ranges[i][1] for i in range(n + 1)) for n in range(len(ranges) - 1)),
    ]
    assert all(length >= WRITEBACK_STEP for _, length in ranges)
    assert (
        artifact.size - WRITE_BUFFER - WRITEBACK_STEP <= sum(length for _, length in ranges) <= artifact.size
    )
    # And it was synced once, before it took its name
    assert len(synced) == 1
