"""Projects for the end-to-end benchmark: git repositories of static sites, generated, never committed.

Three sizes (`SIZES`): one page; a real-size site (about 5,000 files and 100 MB at its head, 50
commits of history: pages of text, images as random bytes, nested folders, a few large files);
and a large artifact (1 GiB in a few big files, which its build writes from seeds: the repository
stays small, the artifact does not). Each repository holds `build.py`, the build command both
Publisher and the shell script run: it copies `site/` into `dist/`, rewriting every HTML page.

The same arguments give the same files and the same commits (fixed seeds, dates and author), so
two generations of a size hold the same commit ids.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import git

BUILD_COMMAND = "python3 build.py"
ARTIFACT_PATH = "dist"
BRANCH = "main"
# A chunk of random bytes written at a time: the build and this generator hold no more than this.
CHUNK = 4 * 1024 * 1024
VOCABULARY = (
    "publish build artifact store queue worker retry cancel commit branch page site static deploy "
    "archive checksum sandbox manifest release preview version update release notes guide index "
    "about contact blog post article the a of and to in is for on with as by at from that this"
)
WORDS = VOCABULARY.split()

# The build command: the site copied into dist/, each page given its header and footer, and the
# big files of `generated.txt` (name, seed, bytes) written from their seeds.
BUILD_SCRIPT = '''\
"""Copies site/ into dist/, rewriting every HTML page; writes generated.txt's files from their seeds."""
import pathlib
import random
import shutil

HEADER = '<header><nav><a href="/">Home</a> <a href="/blog/">Blog</a></nav></header>'
FOOTER = "<footer>Published by Publisher</footer>"
CHUNK = 4 * 1024 * 1024
source, dist = pathlib.Path("site"), pathlib.Path("dist")
copied = 0
for path in sorted(source.rglob("*")):
    target = dist / path.relative_to(source)
    if path.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        continue
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        text = path.read_text(encoding="utf-8")
        target.write_text(text.replace("{{ header }}", HEADER).replace("{{ footer }}", FOOTER))
    else:
        shutil.copyfile(path, target)
    copied += 1
generated = pathlib.Path("generated.txt")
for line in generated.read_text().splitlines() if generated.exists() else []:
    name, seed, size = line.split()
    rng, left = random.Random(int(seed)), int(size)
    (dist / name).parent.mkdir(parents=True, exist_ok=True)
    with open(dist / name, "wb") as out:
        while left:
            out.write(rng.randbytes(min(CHUNK, left)))
            left -= min(CHUNK, left)
    copied += 1
print(f"built {copied} files into dist/")
'''


@dataclass(frozen=True)
class Size:
    """What one size of project holds at its head, and how much history."""

    name: str
    pages: int  # HTML pages of generated text, about `page_bytes` each
    page_bytes: int
    images: int  # files of random bytes, about `image_bytes` each
    image_bytes: int
    large_files: int  # big random files in the repository
    large_bytes: int
    generated_files: int  # big random files the build writes (not in the repository)
    generated_bytes: int
    commits: int

    @property
    def files(self) -> int:
        """Files in the artifact."""
        return self.pages + self.images + self.large_files + self.generated_files

    @property
    def approximate_bytes(self) -> int:
        """The artifact's size before compression, roughly."""
        return (
            self.pages * self.page_bytes
            + self.images * self.image_bytes
            + self.large_files * self.large_bytes
            + self.generated_files * self.generated_bytes
        )


MIB = 1024 * 1024
SIZES = {
    size.name: size
    for size in (
        Size("one-page", 1, 2_000, 0, 0, 0, 0, 0, 0, commits=1),
        # 3,300 pages of 12 KB (40 MB of text), 1,694 images of 32 KB (53 MB) and 6 files of 2 MiB.
        Size("real-size", 3_300, 12_000, 1_694, 32_000, 6, 2 * MIB, 0, 0, commits=50),
        # 1 GiB: eight files of 128 MiB written by the build, beside one page.
        Size("large", 1, 2_000, 0, 0, 0, 0, 8, 128 * MIB, commits=2),
    )
}


@dataclass(frozen=True)
class Project:
    """A generated repository: where it is, and what Publisher's project and the script need."""

    size: Size
    repository: Path
    build_command: str = BUILD_COMMAND
    artifact_path: str = ARTIFACT_PATH
    branch: str = BRANCH

    @property
    def url(self) -> str:
        return self.repository.as_uri()


def generate(size: Size, folder: Path, *, seed: int = 0, packed: bool = True) -> Project:
    """A git repository of `size` at `folder` (which must not exist), its history `size.commits` long.

    `packed=False` leaves its objects loose: the same files and commits, without the repack that takes
    most of a real-size generation (for tests that clone it locally).
    """
    rng = random.Random(f"{size.name}-{seed}")  # noqa: S311 - reproducible content, not a secret
    folder.mkdir(parents=True)
    _run(["git", "init", "--quiet", "-b", BRANCH, str(folder)])
    (folder / "build.py").write_text(BUILD_SCRIPT)
    pages = [_page_path(number) for number in range(size.pages)]
    for path in pages:
        _write_text(folder / "site" / path, _page(rng, size.page_bytes))
    for number in range(size.images):
        _write_bytes(folder / "site" / _image_path(number), rng, _around(rng, size.image_bytes))
    for number in range(size.large_files):
        _write_bytes(folder / "site" / "downloads" / f"file-{number}.bin", rng, size.large_bytes)
    if size.generated_files:
        lines = [
            f"media/video-{n}.bin {rng.randrange(2**32)} {size.generated_bytes}"
            for n in range(size.generated_files)
        ]
        (folder / "generated.txt").write_text("\n".join(lines) + "\n")
    _commit(folder, "The site", 0)
    # Each later commit edits a few pages and adds an image: history, as a real site has.
    for number in range(1, size.commits):
        for path in rng.sample(pages, min(10, len(pages))):
            with (folder / "site" / path).open("a", encoding="utf-8") as fh:
                fh.write(f"<p>Update {number}: {' '.join(rng.choices(WORDS, k=30))}</p>\n")
        if size.images:
            _write_bytes(folder / "site" / "img" / "news" / f"update-{number}.jpg", rng, size.image_bytes)
        _commit(folder, f"Update {number}", number)
    if packed:
        # Packed, as a hosted repository is: a clone then reuses the packed objects.
        _run(["git", "-C", str(folder), "repack", "-a", "-d", "-q"])
    return Project(size=size, repository=folder)


def _page_path(number: int) -> str:
    """Nested folders, three levels at most, index pages among them."""
    section, rest = divmod(number, 500)
    topic, page = divmod(rest, 25)
    return f"section-{section}/topic-{topic}/{'index' if page == 0 else f'page-{page}'}.html"


def _image_path(number: int) -> str:
    section, rest = divmod(number, 400)
    return f"img/section-{section}/gallery-{rest // 50}/photo-{rest % 50}.jpg"


def _around(rng: random.Random, mean: int) -> int:
    return max(1, int(rng.uniform(0.5, 1.5) * mean))


def _page(rng: random.Random, size: int) -> str:
    """An HTML page of about `size` bytes of paragraphs of words, with the build's placeholders."""
    paragraphs: list[str] = []
    length = 0
    while length < size:
        paragraph = f"<p>{' '.join(rng.choices(WORDS, k=rng.randint(40, 120)))}</p>"
        paragraphs.append(paragraph)
        length += len(paragraph) + 1
    title = " ".join(rng.choices(WORDS, k=4)).title()
    body = "\n".join(paragraphs)
    head = f"<!doctype html>\n<html><head><title>{title}</title></head>\n"
    return f"{head}<body>{{{{ header }}}}\n<h1>{title}</h1>\n{body}\n{{{{ footer }}}}</body></html>\n"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _write_bytes(path: Path, rng: random.Random, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        left = size
        while left:
            fh.write(rng.randbytes(min(CHUNK, left)))
            left -= min(CHUNK, left)


def _commit(folder: Path, message: str, number: int) -> None:
    # Fixed dates: the same generation gives the same commit ids.
    date = f"{1_700_000_000 + number * 3600} +0000"
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    _run([*git(folder), "add", "-A"], env=env)
    _run([*git(folder), "commit", "--quiet", "--no-verify", "-m", message], env=env)


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
