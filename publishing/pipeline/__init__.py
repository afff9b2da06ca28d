"""The publishing pipeline: checkout, build, package, submit.

One module a step, one interface (`Pipeline`). The default implementation is
`DefaultPipeline`; `PUBLISHING_PIPELINE` names another class to plug in (tests
and other pipelines); the stores the submit step delivers to are plug-ins of their own
(`publishing.pipeline.stores`, one module a URL scheme). Steps raise `TransientJobError` (retried) or
`PermanentJobError` (fails at once), each with a stable `code`.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.utils.module_loading import import_string

from publishing.pipeline.base import Artifact, Commit, Job, Origin, Pipeline, Source, Submission
from publishing.pipeline.build import run_build
from publishing.pipeline.checkout import checkout, head_commit
from publishing.pipeline.package import package
from publishing.pipeline.submit import submit

__all__ = [
    "Artifact",
    "Commit",
    "DefaultPipeline",
    "Job",
    "Origin",
    "Pipeline",
    "Source",
    "Submission",
    "get_pipeline",
]


class DefaultPipeline:
    """git clone, a sandboxed build command, a deterministic tar.gz, the store its target URL names."""

    def checkout(self, job: Job) -> Source:
        path = checkout(
            job.repository_url,
            job.ref,
            dest=job.workspace / "source",
            timeout=settings.PUBLISHING_CHECKOUT_TIMEOUT,
            allow_local=settings.PUBLISHING_ALLOW_LOCAL_SOURCES,
            allow_private=settings.PUBLISHING_ALLOW_PRIVATE_TARGETS,
            on_output=job.log,
            commit=job.commit,
        )
        return Source(path=path, commit=head_commit(path, timeout=settings.PUBLISHING_CHECKOUT_TIMEOUT))

    def build(self, job: Job, source: Path) -> None:
        if job.build_command.strip():
            run_build(
                job.build_command,
                cwd=source,
                timeout=settings.PUBLISHING_BUILD_TIMEOUT,
                output_limit=settings.PUBLISHING_LOG_LIMIT,
                on_output=job.log,
                variables=job.build_variables(),
            )

    def package(self, job: Job, source: Path) -> Artifact:
        return package(
            source,
            job.artifact_path,
            out_dir=job.workspace / "out",
            name=job.publishing_id,
            compression_level=settings.PUBLISHING_ARTIFACT_COMPRESSION_LEVEL,
        )

    def submit(self, job: Job, artifact: Artifact) -> Submission:
        return submit(artifact, target_url=job.target_url, publishing_id=job.publishing_id, origin=job.origin)


def get_pipeline() -> Pipeline:
    """The pipeline named by PUBLISHING_PIPELINE."""
    pipeline: Pipeline = import_string(settings.PUBLISHING_PIPELINE)()
    return pipeline
