"""A genuinely full file system for the tests of a full disk: a small tmpfs, mounted by a child process in
mount namespaces of its own (bwrap), so no mount outlives the child.

`on_full_disk` runs one scenario of this module (`python -m tests.support.full_disk <scenario> <json>`)
in the child, over a tmpfs mounted on a folder of the test's; the child fills the tmpfs, runs the step,
and prints what it saw as one line of JSON: error class and code, the files left and their sha256.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parents[2]
# Big enough for the scenarios' files and a filler, small enough to fill in an instant.
TMPFS_BYTES = 512 * 1024


def on_full_disk(folder: Path, scenario: str, **args: Any) -> dict[str, Any]:
    """What `scenario` reports, run in a child over a TMPFS_BYTES tmpfs on `folder` (empty again after).

    Without bwrap or namespaces to mount in, the test fails in CI and skips elsewhere.
    """
    from tests.support.prerequisites import missing  # pytest: only the parent side needs it

    bwrap = shutil.which("bwrap")
    if bwrap is None:
        missing("bwrap: a full disk is a small tmpfs it mounts", ci_hint=".ci/run installs bubblewrap")
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        *(bwrap, "--dev-bind", "/", "/", "--die-with-parent"),
        *("--size", str(TMPFS_BYTES), "--tmpfs", str(folder)),
        *(
            sys.executable,
            "-m",
            "tests.support.full_disk",
            scenario,
            json.dumps({**args, "folder": str(folder)}),
        ),
    ]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "publisher_project.settings.test"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 and result.stderr.startswith("bwrap:"):
        missing(f"a tmpfs in a mount namespace ({result.stderr.strip()})", ci_hint="CI runs as root")
    assert result.returncode == 0, f"scenario {scenario} failed:\n{result.stdout}\n{result.stderr}"
    assert not os.path.ismount(folder)
    assert list(folder.iterdir()) == []
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


# --- The child's side -----------------------------------------------------------


def fill(folder: Path, leave: int) -> Path:
    """Fill `folder`'s file system with one file, then free `leave` bytes of it, in whole pages."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        try:
            while True:
                os.write(fd, b"\xff" * PAGE)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        written = os.fstat(fd).st_size // PAGE * PAGE
        os.ftruncate(fd, max(0, written - -(-leave // PAGE) * PAGE))
    finally:
        os.close(fd)
    return filler


def _attempt(step: Callable[[], Any]) -> dict[str, Any]:
    """The step's outcome: `ok`, or the error's class, code and detail."""
    from publishing.exceptions import JobError

    try:
        step()
    except JobError as exc:
        return {"error": type(exc).__name__, "code": exc.code, "detail": exc.detail}
    return {"error": None}


def _files(folder: Path) -> dict[str, dict[str, Any]]:
    """Each file below `folder` (relative name): its sha256, and for JSON the sha256 it names."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        entry: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest()}
        if path.suffix == ".json":
            with contextlib.suppress(ValueError):
                entry["names"] = json.loads(data).get("sha256")
        files[str(path.relative_to(folder))] = entry
    return files


def _write_site(site: Path, files: int, size: int) -> None:
    """`files` files of `size` random (incompressible) bytes each, the same on every call."""
    site.mkdir(parents=True)
    for index in range(files):
        (site / f"page-{index}.bin").write_bytes(random.Random(index).randbytes(size))  # noqa: S311 - incompressible, not secret


def package_scenario(folder: Path, *, leave: int, files: int, size: int) -> dict[str, Any]:
    """Package a site from a workspace whose file system has `leave` bytes free; then with room."""
    from django.conf import settings

    from publishing.pipeline.package import package
    from publishing.pipeline.workspace import workspace

    settings.PUBLISHING_WORKSPACE_DIR = str(folder / "workspaces")
    report: dict[str, Any] = {}
    with workspace() as ws:
        _write_site(ws / "source" / "site", files, size)
        filler = fill(folder, leave)
        report["full"] = _attempt(lambda: package(ws / "source", "site", out_dir=ws / "out", name="pub"))
        report["full"]["out"] = sorted(os.listdir(ws / "out"))
    report["workspaces_after"] = sorted(os.listdir(folder / "workspaces"))
    filler.unlink()
    with workspace() as ws:
        _write_site(ws / "source" / "site", files, size)
        report["room"] = _attempt(lambda: package(ws / "source", "site", out_dir=ws / "out", name="pub"))
        with tarfile.open(ws / "out" / "pub.tar.gz") as tar:
            report["room"]["members"] = len(tar.getmembers())
    return report


def file_store_scenario(
    folder: Path, *, artifact: str, leave: int | str, earlier: str | None = None
) -> dict[str, Any]:
    """Submit `artifact` to a file store on a file system with `leave` bytes free ("archive": just room
    for the archive), over what submitting `earlier` stored; then with room."""
    from publishing.pipeline.base import Artifact
    from publishing.pipeline.stores.file import FileStore
    from tests.support.stores import ORIGIN, PUBLISHING_ID

    def as_artifact(path: str) -> Artifact:
        data = Path(path).read_bytes()
        return Artifact(path=Path(path), sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    store = FileStore(roots=[str(folder)])
    target = (folder / "store").as_uri()

    def submit(what: Artifact) -> Callable[[], Any]:
        return lambda: store.submit(what, target_url=target, publishing_id=PUBLISHING_ID, origin=ORIGIN)

    report: dict[str, Any] = {}
    if earlier is not None:
        report["earlier"] = _attempt(submit(as_artifact(earlier)))
    free = Path(artifact).stat().st_size if leave == "archive" else int(leave)
    filler = fill(folder, free)
    report["full"] = _attempt(submit(as_artifact(artifact)))
    report["full"]["files"] = _files(folder / "store")
    filler.unlink()
    report["room"] = _attempt(submit(as_artifact(artifact)))
    report["room"]["files"] = _files(folder / "store")
    return report


def checkout_scenario(folder: Path, *, repository: str, leave: int) -> dict[str, Any]:
    """Clone `repository` into a workspace whose file system has `leave` bytes free; then with room."""
    from django.conf import settings

    from publishing.pipeline.checkout import checkout
    from publishing.pipeline.workspace import workspace

    settings.PUBLISHING_WORKSPACE_DIR = str(folder / "workspaces")

    def clone(ws: Path) -> Callable[[], Any]:
        return lambda: checkout(
            repository,
            "main",
            dest=ws / "source",
            timeout=60,
            allow_local=True,
            allow_private=True,
            on_output=lambda text: None,
        )

    report: dict[str, Any] = {}
    with workspace() as ws:
        filler = fill(folder, leave)
        report["full"] = _attempt(clone(ws))
        report["full"]["source_left"] = (ws / "source").exists()
    report["workspaces_after"] = sorted(os.listdir(folder / "workspaces"))
    filler.unlink()
    with workspace() as ws:
        report["room"] = _attempt(clone(ws))
        report["room"]["files"] = sorted(p.name for p in (ws / "source").iterdir() if p.name != ".git")
    return report


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "checkout": checkout_scenario,
    "package": package_scenario,
    "file_store": file_store_scenario,
}


def main(argv: list[str]) -> None:
    import django

    django.setup()
    scenario, args = argv[1], json.loads(argv[2])
    folder = Path(args.pop("folder"))
    print(json.dumps(SCENARIOS[scenario](folder, **args)))  # noqa: T201 - the report to the parent


if __name__ == "__main__":
    main(sys.argv)
