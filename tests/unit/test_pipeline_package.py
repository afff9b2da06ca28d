"""Package step: deterministic archives, normalised entries, and artifact path containment."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import pwd
import random
import tarfile
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError
from publishing.pipeline import DefaultPipeline, Job, Origin
from publishing.pipeline.package import (
    ARCHIVE_MTIME,
    WRITE_BUFFER,
    package,
    resolve_artifact_path,
)

# `publishing.pipeline.package` is also the name of the step's function on the package.
package_module = importlib.import_module("publishing.pipeline.package")

SITE = {
    "index.html": b"<h1>hello</h1>",
    "assets/app.js": b"console.log(1)",
    "assets/img/logo.svg": b"<svg/>",
    "run.sh": b"#!/bin/sh\necho hi\n",
}


def _make_site(root: Path, order: list[str], mtime: int) -> Path:
    """Write SITE below `root/dist` in `order`, with every mtime set to `mtime`; return the checkout."""
    for name in order:
        path = root / "dist" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SITE[name])
    (root / "dist" / "run.sh").chmod(0o750)
    (root / "dist" / "index.html").chmod(0o600)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (mtime, mtime))
    return root


def _members(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return tar.getmembers()


def test_package_is_deterministic_across_mtimes_and_creation_order(tmp_path):
    # Given the same content written in different orders at different times
    first = _make_site(tmp_path / "a", sorted(SITE), mtime=1_000_000)
    second = _make_site(tmp_path / "b", sorted(SITE, reverse=True), mtime=1_700_000_000)

    # When
    one = package(first, "dist", out_dir=tmp_path / "out-a", name="pub")
    two = package(second, "dist", out_dir=tmp_path / "out-b", name="pub")

    # Then
    assert one.sha256 == two.sha256
    assert one.path.read_bytes() == two.path.read_bytes()


def test_package_returns_the_archive_path_sha256_and_size(tmp_path):
    # Given a checkout
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)

    # When
    artifact = package(source, "dist", out_dir=tmp_path / "out", name="pub-1")

    # Then
    assert artifact.path == tmp_path / "out" / "pub-1.tar.gz"
    data = artifact.path.read_bytes()
    assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert artifact.size == len(data)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["pub-1.tar.gz"]


def test_package_normalises_owners_times_and_modes_and_sorts_entries(tmp_path):
    # Given a checkout with an executable and a private file
    source = _make_site(tmp_path / "src", sorted(SITE, reverse=True), mtime=1_000_000)

    # When
    artifact = package(source, "dist", out_dir=tmp_path / "out", name="pub")

    # Then
    members = _members(artifact.path)
    assert [m.name for m in members] == [
        "assets",
        "assets/app.js",
        "assets/img",
        "assets/img/logo.svg",
        "index.html",
        "run.sh",
    ]
    for member in members:
        assert member.mtime == ARCHIVE_MTIME
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
    modes = {m.name: m.mode for m in members}
    assert modes["assets"] == 0o755
    assert modes["run.sh"] == 0o755
    assert modes["index.html"] == 0o644
    assert modes["assets/app.js"] == 0o644


def test_package_writes_a_gzip_header_without_name_or_time(tmp_path):
    # Given a checkout
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)

    # When
    artifact = package(source, "dist", out_dir=tmp_path / "out", name="pub")

    # Then the FNAME flag is unset and MTIME is zero
    header = artifact.path.read_bytes()[:10]
    assert header[3] & 0x08 == 0
    assert header[4:8] == b"\x00\x00\x00\x00"
    with gzip.open(artifact.path) as fh, tarfile.open(fileobj=io.BytesIO(fh.read())) as tar:
        assert tar.getnames()


def test_package_excludes_git_directories_at_any_depth(tmp_path):
    # Given a checkout with .git folders and a .git file
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (source / "dist" / ".git").mkdir()
    (source / "dist" / ".git" / "config").write_text("[core]")
    (source / "dist" / "assets" / ".git").write_text("gitdir: ../../.git/modules/assets")

    # When
    artifact = package(source, "dist", out_dir=tmp_path / "out", name="pub")

    # Then
    names = [m.name for m in _members(artifact.path)]
    assert not any(".git" in name.split("/") for name in names)
    assert "index.html" in names


def test_package_of_the_whole_checkout_skips_its_git_folder(tmp_path):
    # Given a checkout with a .git folder, packaged from its root
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (source / ".git").mkdir()
    (source / ".git" / "HEAD").write_text("ref: refs/heads/main")

    # When
    artifact = package(source, ".", out_dir=tmp_path / "out", name="pub")

    # Then
    names = [m.name for m in _members(artifact.path)]
    assert "dist/index.html" in names
    assert not any(name.startswith(".git") for name in names)


def test_package_stores_symlinks_inside_the_artifact_as_links_without_following_them(tmp_path):
    # Given a link to a file and a link to a directory, both inside the artifact
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (source / "dist" / "home.html").symlink_to("index.html")
    (source / "dist" / "static").symlink_to("assets")
    (source / "dist" / "assets" / "img" / "up").symlink_to("../..")

    # When
    artifact = package(source, "dist", out_dir=tmp_path / "out", name="pub")

    # Then they are links in the archive, and the linked directory was not walked again
    members = {m.name: m for m in _members(artifact.path)}
    assert (members["home.html"].issym(), members["home.html"].linkname) == (True, "index.html")
    assert (members["static"].issym(), members["static"].linkname) == (True, "assets")
    assert members["assets/img/up"].issym()
    assert not any(name.startswith(("static/", "assets/img/up/")) for name in members)


@pytest.mark.parametrize(
    "link",
    [
        "{outside}",  # absolute, out of the checkout
        "../../outside/secret.txt",  # relative, out of the checkout
        "../README.md",  # inside the checkout, but not the artifact
        "{source}/dist/index.html",  # absolute: it would not point here once unpacked
    ],
)
def test_package_refuses_a_symlink_that_points_out_of_the_artifact(tmp_path, link):
    # Given a link among the build output pointing elsewhere
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (source / "README.md").write_text("readme")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    (source / "dist" / "escape").symlink_to(link.format(outside=tmp_path / "outside", source=source))

    # When / Then nothing is written
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, "dist", out_dir=tmp_path / "out", name="pub")
    assert excinfo.value.code == "ARTIFACT_PATH_INVALID"
    assert "escape" in excinfo.value.detail
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.needs_root("files of two owners need root")
def test_package_refuses_a_hard_link_to_a_file_from_outside_the_build(tmp_path):
    # Given a checkout owned by the build user, with a hard link to a root-owned file from elsewhere
    nobody = pwd.getpwnam("nobody")
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    for path in [source, *source.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
    (tmp_path / "shadow").write_text("root:secret")
    os.link(tmp_path / "shadow", source / "dist" / "shadow")

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, "dist", out_dir=tmp_path / "out", name="pub")
    assert excinfo.value.code == "ARTIFACT_PATH_INVALID"


def test_package_keeps_hard_links_between_the_builds_own_files(tmp_path):
    # Given two names for one file of the build
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    os.link(source / "dist" / "index.html", source / "dist" / "copy.html")

    # When
    artifact = package(source, "dist", out_dir=tmp_path / "out", name="pub")

    # Then both are stored with their content
    with tarfile.open(artifact.path, "r:gz") as tar:
        copy = tar.extractfile("copy.html")
        assert copy is not None
        assert copy.read() == SITE["index.html"]


def test_package_never_reads_through_a_directory_swapped_for_a_symlink(tmp_path, monkeypatch):
    # Given a build process that swaps a directory for a link out of the checkout once the tree is scanned
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "app.js").write_text("secret")
    scan = package_module._scan

    def scan_then_swap(root_fd: int, skip: tuple[int, int]) -> list[Any]:
        entries: list[Any] = scan(root_fd, skip)
        (source / "dist" / "assets").rename(tmp_path / "moved")
        (source / "dist" / "assets").symlink_to(tmp_path / "outside")
        return entries

    monkeypatch.setattr(package_module, "_scan", scan_then_swap)

    # When / Then packaging fails rather than read the outside file
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, "dist", out_dir=tmp_path / "out", name="pub")
    assert excinfo.value.code == "PACKAGE_FAILED"
    assert "symlink" in excinfo.value.detail
    assert not list((tmp_path / "out").iterdir())


def test_package_skips_special_files(tmp_path):
    # Given a FIFO among the build output
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    os.mkfifo(source / "dist" / "pipe")

    # When
    artifact = package(source, "dist", out_dir=tmp_path / "out", name="pub")

    # Then
    assert "pipe" not in [m.name for m in _members(artifact.path)]


def test_package_of_a_single_file_stores_it_under_its_basename(tmp_path):
    # Given a single-file artifact
    source = tmp_path / "src"
    (source / "build").mkdir(parents=True)
    (source / "build" / "app.zip").write_bytes(b"PK-zip-bytes")

    # When
    artifact = package(source, "build/app.zip", out_dir=tmp_path / "out", name="pub")

    # Then
    with tarfile.open(artifact.path, "r:gz") as tar:
        assert tar.getnames() == ["app.zip"]
        extracted = tar.extractfile("app.zip")
        assert extracted is not None
        assert extracted.read() == b"PK-zip-bytes"


@pytest.mark.parametrize("artifact_path", ["../other", "dist/../../other", "/etc", "/tmp/dist"])
def test_resolve_artifact_path_refuses_paths_leaving_the_checkout(tmp_path, artifact_path):
    # Given a checkout next to another folder
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (tmp_path / "other").mkdir()

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        resolve_artifact_path(source, artifact_path)
    assert excinfo.value.code == "ARTIFACT_PATH_INVALID"


def test_resolve_artifact_path_refuses_a_symlink_out_of_the_checkout(tmp_path):
    # Given a link in the checkout pointing out of it
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (tmp_path / "elsewhere").mkdir()
    (source / "out").symlink_to(tmp_path / "elsewhere")

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, "out", out_dir=tmp_path / "pkg", name="pub")
    assert excinfo.value.code == "ARTIFACT_PATH_INVALID"


def test_resolve_artifact_path_follows_a_symlink_that_stays_inside(tmp_path):
    # Given a link to a folder inside the checkout
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (source / "public").symlink_to("dist")

    # When
    resolved = resolve_artifact_path(source, "public")

    # Then
    assert resolved == (source / "dist").resolve()


def test_resolve_artifact_path_reports_a_missing_path(tmp_path):
    # Given a checkout without the artifact
    source = tmp_path / "src"
    source.mkdir()

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        resolve_artifact_path(source, "dist")
    assert excinfo.value.code == "ARTIFACT_NOT_FOUND"


@pytest.mark.parametrize("artifact_path", ["out", "out/sub", "dist/../out", "link-to-link", "file.txt"])
def test_package_refuses_an_artifact_path_through_a_symlink_out_of_the_checkout(tmp_path, artifact_path):
    # Given links in the checkout to a folder and a file outside it, and a link to such a link
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere" / "secret.txt").write_text("secret")
    (source / "out").symlink_to(tmp_path / "elsewhere")
    (source / "link-to-link").symlink_to("out")
    (source / "file.txt").symlink_to(tmp_path / "elsewhere" / "secret.txt")

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, artifact_path, out_dir=tmp_path / "pkg", name="pub")
    assert excinfo.value.code == "ARTIFACT_PATH_INVALID"


def test_package_of_a_file_reached_through_a_link_inside_stores_the_file(tmp_path):
    # Given a link inside the checkout to a file inside it
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (source / "latest.html").symlink_to("dist/index.html")

    # When
    artifact = package(source, "latest.html", out_dir=tmp_path / "out", name="pub")

    # Then the file's content is stored under the name asked for
    with tarfile.open(artifact.path, "r:gz") as tar:
        member = tar.getmember("latest.html")
        assert member.isfile()
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read() == SITE["index.html"]


@pytest.mark.parametrize(("depth", "files"), [(package_module.MAX_DEPTH + 1, 0), (1, 40)])
def test_package_refuses_an_artifact_too_deep_or_with_too_many_entries(tmp_path, monkeypatch, depth, files):
    # Given a build that left a deep chain of directories, or many files (the bound lowered for speed)
    monkeypatch.setattr(package_module, "MAX_ENTRIES", 30)
    source = tmp_path / "source"
    deepest = source.joinpath("dist", *["d"] * depth)
    deepest.mkdir(parents=True)
    for n in range(files):
        (deepest / f"f{n}.txt").write_text("x")

    # When / Then packaging stops with its own code instead of walking it all
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, "dist", out_dir=tmp_path / "out", name="a")
    assert excinfo.value.code == "ARTIFACT_TOO_LARGE"


@pytest.mark.parametrize("artifact_path", [".git", ".git/objects", "public"])
def test_package_refuses_git_named_or_reached_through_a_link(tmp_path, artifact_path):
    # Given a checkout whose .git holds credentials, and a link the build made to it
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (source / ".git" / "objects").mkdir(parents=True)
    (source / ".git" / "config").write_text("[remote]\n\turl = https://user:token@example.com/r.git\n")
    (source / "public").symlink_to(".git")

    # When / Then nothing is packaged
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, artifact_path, out_dir=tmp_path / "pkg", name="pub")
    assert excinfo.value.code == "ARTIFACT_PATH_INVALID"
    assert "never published" in excinfo.value.detail
    assert not (tmp_path / "pkg").exists()


def test_package_refuses_an_artifact_path_that_is_neither_a_file_nor_a_folder(tmp_path):
    # Given a build that left a FIFO where its artifact should be
    source = tmp_path / "src"
    source.mkdir()
    os.mkfifo(source / "dist")

    # When / Then nothing is read from it (a FIFO would block), and the error says what it is not
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, "dist", out_dir=tmp_path / "out", name="pub")
    assert excinfo.value.code == "ARTIFACT_PATH_INVALID"
    assert excinfo.value.detail == "artifact path 'dist' is neither a file nor a directory"


def test_package_reports_an_unwritable_output_folder_as_a_permanent_failure(tmp_path):
    # Given an output folder that cannot be made (a file is in the way): no retry would help
    source = _make_site(tmp_path / "src", sorted(SITE), mtime=1_000_000)
    (tmp_path / "in-the-way").write_text("")

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        package(source, "dist", out_dir=tmp_path / "in-the-way" / "out", name="pub")
    assert excinfo.value.code == "PACKAGE_FAILED"
    assert excinfo.value.detail.startswith("packaging failed: [Errno 20] Not a directory")


def _make_text_site(root: Path) -> tuple[Path, dict[str, bytes]]:
    """A checkout whose dist/ holds text (which each gzip level packs differently) and random bytes,
    each larger than the archive's write buffer."""
    rng = random.Random(7)  # noqa: S311 - reproducible content, not a secret
    words = ("publish", "build", "artifact", "store", "queue", "worker", "page", "site", "the", "of")
    content = {
        "page.html": " ".join(rng.choice(words) for _ in range(WRITE_BUFFER // 2)).encode(),
        "image.bin": rng.randbytes(WRITE_BUFFER + 1000),
    }
    (root / "dist").mkdir(parents=True)
    for name, data in content.items():
        (root / "dist" / name).write_bytes(data)
    return root, content


def test_the_compression_level_reaches_the_archive_and_the_checksum_is_the_files(tmp_path):
    # Given a checkout of text and random bytes
    source, content = _make_text_site(tmp_path / "src")

    # When it is packaged at gzip's levels 0 (stored), 1 and 9
    artifacts = {
        level: package(source, "dist", out_dir=tmp_path / f"out-{level}", name="pub", compression_level=level)
        for level in (0, 1, 9)
    }

    # Then the higher the level, the smaller the archive, each holding the same files
    assert artifacts[9].size < artifacts[1].size < artifacts[0].size
    for artifact in artifacts.values():
        with tarfile.open(artifact.path, "r:gz") as tar:
            assert {name: tar.extractfile(name).read() for name in content} == content  # type: ignore[union-attr]
        # And the sha256 and size taken while writing are those of the file written
        data = artifact.path.read_bytes()
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
        assert artifact.size == len(data)


@pytest.mark.parametrize("level", [-1, 10])
def test_package_refuses_a_level_gzip_does_not_have(tmp_path, level):
    source, _ = _make_text_site(tmp_path / "src")
    with pytest.raises(ValueError, match=f"compression level {level} is not between 0 and 9"):
        package(source, "dist", out_dir=tmp_path / "out", name="pub", compression_level=level)
    assert not (tmp_path / "out").exists()


def test_the_default_pipeline_packages_at_the_configured_level(tmp_path, settings):
    # Given a checkout, and a level other than the default configured
    source, _ = _make_text_site(tmp_path / "src")
    settings.PUBLISHING_ARTIFACT_COMPRESSION_LEVEL = 1
    job = Job(
        publishing_id="pub",
        origin=Origin(owner_id="1", project_id="2", project_slug="site"),
        repository_url="https://example.com/site.git",
        ref="main",
        build_command="",
        artifact_path="dist",
        target_url="file:///srv/store",
        workspace=tmp_path / "workspace",
        log=lambda _chunk: None,
    )

    # When the pipeline packages it
    artifact = DefaultPipeline().package(job, source)

    # Then the archive is the one of that level, not the default's
    at_one = package(source, "dist", out_dir=tmp_path / "at-1", name="pub", compression_level=1)
    default = package(source, "dist", out_dir=tmp_path / "default", name="pub")
    assert artifact.path.read_bytes() == at_one.path.read_bytes()
    assert artifact.sha256 == at_one.sha256 != default.sha256
