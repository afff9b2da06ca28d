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


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Submission:
    uri: str
    ref: str


class Pipeline(Protocol):
    def checkout(self, job: Job) -> Path: ...

    def build(self, job: Job, source: Path) -> None: ...

    def package(self, job: Job, source: Path) -> Artifact: ...

    def submit(self, job: Job, artifact: Artifact) -> Submission: ...
