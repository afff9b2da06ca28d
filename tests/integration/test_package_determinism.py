"""The package step on a real-size site (bench.projects): the same commit, the same archive, byte for byte.

Slow (20 to 30 s, half of it generating the site): 5,000 files and 100 MB, built once, packaged four times.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.projects import ARTIFACT_PATH, BUILD_COMMAND, SIZES, generate
from publishing.pipeline.package import DEFAULT_COMPRESSION_LEVEL, package

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder removed afterwards: the checkouts and archives take about a gigabyte."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


def _checkout_and_build(repository: Path, dest: Path) -> Path:
    # A local clone links the generated repository's objects: no packing, as a remote clone would need.
    subprocess.run(["git", "clone", "--quiet", str(repository), str(dest)], check=True)
    subprocess.run(shlex.split(BUILD_COMMAND), cwd=dest, check=True, stdout=subprocess.DEVNULL)
    return dest


def _copy_in_reverse(source: Path, dest: Path, *, mtime: int) -> int:
    """Copy the files of `source` into `dest`, last name first, then give every entry `mtime` and the
    files owner-only modes: the same content in other inodes, folders, times and modes. Returns how
    many entries `dest` holds."""
    files = sorted(path for path in source.rglob("*") if path.is_file())
    for path in reversed(files):
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(0o600)
    entries = list(dest.rglob("*"))
    for path in entries:
        os.utime(path, (mtime, mtime))
    return len(entries)


def test_the_same_commit_packs_to_the_same_bytes_on_a_real_size_site(scratch: Path) -> None:
    # Given a real-size site, checked out and built; and its build's files copied into a second
    # checkout's artifact folder, last first, with other times and modes
    project = generate(SIZES["real-size"], scratch / "repository", packed=False)
    one = _checkout_and_build(project.repository, scratch / "one")
    two = scratch / "two"
    entries = _copy_in_reverse(one / ARTIFACT_PATH, two / ARTIFACT_PATH, mtime=1_900_000_000)

    digests = set()
    for level in (DEFAULT_COMPRESSION_LEVEL, 1):
        # When each is packaged, at the default level and at another
        first = package(
            one, ARTIFACT_PATH, out_dir=scratch / f"one-{level}", name="pub", compression_level=level
        )
        second = package(
            two, ARTIFACT_PATH, out_dir=scratch / f"two-{level}", name="pub", compression_level=level
        )

        # Then the two archives are the same bytes, and their sha256 is that of those bytes
        assert first.sha256 == second.sha256
        assert first.size == second.size
        assert filecmp.cmp(first.path, second.path, shallow=False)
        with first.path.open("rb") as fh:
            assert first.sha256 == hashlib.file_digest(fh, "sha256").hexdigest()
        digests.add(first.sha256)

    # And each level gives an archive of its own, which holds every entry of the artifact
    assert len(digests) == 2
    with tarfile.open(second.path, "r:gz") as tar:
        assert len(tar.getmembers()) == entries
