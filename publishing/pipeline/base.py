"""The pipeline's interface and the values its steps pass along."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Origin:
    """Whose artifact a run makes: its project and that project's owner (a user id)."""

    owner_id: str
    project_id: str
    project_slug: str


@dataclass(frozen=True)
class Job:
    """What a pipeline run needs, copied from the records when the attempt starts."""

    publishing_id: str
    # The file store keeps each owner's artifacts apart.
    origin: Origin
    repository_url: str
    ref: str
    build_command: str
    artifact_path: str
    target_url: str
    # A private temporary folder for this attempt, removed afterwards.
    workspace: Path
    # Appends a chunk of output to the publishing's (capped) log.
    log: Callable[[str], None]
    # A full commit id or a tag in the history of `ref` to check out instead of its head; empty: the head.
    commit: str = ""
    # Which run of the publishing this is (1, then each retry or requeue): the build sees it.
    attempt: int = 1

    def build_variables(self) -> dict[str, str]:
        """What the build's environment tells it of its run: the commit (once checked out, the full id
        of what it builds) and which attempt."""
        return {"PUBLISHER_COMMIT": self.commit, "PUBLISHER_ATTEMPT": str(self.attempt)}


# A commit id on a page: as short as git and GitHub show it, the whole id a hover away. (The log
# says 12, `Commit.short`: text that is searched, and unambiguous in any history.)
SHORT_SHA_LENGTH = 7


def short_sha(sha: str) -> str:
    """The first SHORT_SHA_LENGTH hex digits of a commit id."""
    return sha[:SHORT_SHA_LENGTH]


@dataclass(frozen=True)
class Commit:
    """The commit a checkout holds, as git reads it there (never taken from the ref's name)."""

    sha: str  # the full commit id: 40 hex digits (64 in a SHA-256 repository)
    subject: str  # its subject line
    author: str  # "Name <email>"

    @property
    def short(self) -> str:
        return self.sha[:12]


@dataclass(frozen=True)
class Source:
    """What the checkout step hands on: the checked-out folder and the commit it holds."""

    path: Path
    commit: Commit


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size: int
    # The commit it was built from, for the store's manifest, headers and metadata; None if unknown.
    commit: Commit | None = None


@dataclass(frozen=True)
class Submission:
    uri: str
    ref: str


class Pipeline(Protocol):
    def checkout(self, job: Job) -> Source: ...

    def build(self, job: Job, source: Path) -> None: ...

    def package(self, job: Job, source: Path) -> Artifact: ...

    def submit(self, job: Job, artifact: Artifact) -> Submission: ...
