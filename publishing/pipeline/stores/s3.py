"""s3:// store: an object in an S3 bucket (AWS S3, or MinIO, Cloudflare R2 and other S3 APIs at
PUBLISHING_S3_ENDPOINT_URL), under one of PUBLISHING_S3_STORE_ROOTS.

`s3://bucket/prefix` keeps each artifact at `<prefix>/<owner id>/<project slug>/<publishing id>.tar.gz`,
with its manifest beside it (`.json`). Credentials and region come from the workers' environment,
as boto3 finds them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, a profile or an
instance role), never from the URL.

The store checks the content: each PUT carries the archive's SHA-256 (`x-amz-checksum-sha256`), and
S3 refuses a body that does not match it. Idempotent per publishing: a re-send finds the object
with the same SHA-256 and writes nothing; another archive under that key is refused, never
overwritten (the write itself is conditional, `If-None-Match: *`, so two racing attempts cannot both
write).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import unquote

import boto3
import botocore.exceptions
from botocore.config import Config
from django.conf import settings

from publishing.exceptions import JobError, PermanentJobError, TransientJobError
from publishing.pipeline.base import Artifact, Origin, Submission
from publishing.pipeline.network import has_control_or_space, is_transient_status, split_url
from publishing.pipeline.stores.base import artifact_names, manifest
from publishing.redaction import redact_credentials

logger = logging.getLogger(__name__)

# S3's rule for bucket names that work in every region and as a host name (virtual-hosted style).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
ADDRESSING_STYLES = ("auto", "path", "virtual")
# S3 (BadDigest) and MinIO (XAmzContentChecksumMismatch) refusing a body whose checksum differs.
CHECKSUM_MISMATCH_CODES = frozenset({"BadDigest", "XAmzContentChecksumMismatch"})
# Answers that mean "these credentials may not do this here".
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccountProblem"}
)
# Answers worth a retry whatever their status (S3's RequestTimeout is a 400). A full quota (MinIO's
# bucket quota is a 400) is as a full disk: room can come back, and the retry then publishes.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "RequestLimitExceeded",
        "TooManyRequestsException", "RequestTimeout", "InternalError", "ServiceUnavailable",
        "QuotaExceeded", "XMinioAdminBucketQuotaExceeded",
    }
)  # fmt: skip
# A conditional write that lost: the object appeared since it was looked for.
WRITE_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (its parts, none for the bucket's top)."""

    bucket: str
    prefix: tuple[str, ...] = ()

    def key(self, *names: str) -> str:
        return "/".join((*self.prefix, *names))

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key or self.key()}".rstrip("/")

    def is_under(self, root: S3Location) -> bool:
        return self.bucket == root.bucket and self.prefix[: len(root.prefix)] == root.prefix


def parse_s3_url(url: str) -> S3Location:
    """The bucket and prefix `s3://bucket[/prefix]` names; PermanentJobError (TARGET_INVALID) otherwise."""
    parts = split_url(url, what="target URL", code="TARGET_INVALID")
    if "@" in parts.netloc:
        raise PermanentJobError(
            "an s3:// target carries no credentials: the workers take them from their environment",
            code="TARGET_INVALID",
        )
    bucket = parts.netloc
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket or _is_ip_address(bucket):
        raise PermanentJobError(
            f"{bucket!r} is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens): "
            "write s3://bucket/prefix",
            code="TARGET_INVALID",
        )
    path = unquote(parts.path).strip("/")
    prefix = tuple(path.split("/")) if path else ()
    if (
        parts.query
        or parts.fragment
        or has_control_or_space(path)
        or any(p in ("", ".", "..") for p in prefix)
    ):
        raise PermanentJobError(
            "an s3:// target is s3://bucket/prefix, its prefix without empty, . or .. parts",
            code="TARGET_INVALID",
        )
    return S3Location(bucket, prefix)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class S3Store:
    """Puts the archive and its manifest into a bucket through the S3 API.

    `roots` are the `s3://bucket[/prefix]` places targets must lie under (none: no s3:// target);
    `endpoint_url` is the S3 API's address (empty: AWS S3), `addressing_style` how a bucket is
    named in requests (`path` for most MinIO setups), `timeout` in seconds for each connection
    and read.
    """

    def __init__(
        self,
        *,
        roots: Sequence[str],
        endpoint_url: str = "",
        addressing_style: str = "auto",
        timeout: int = 60,
    ) -> None:
        self.roots = [parse_s3_url(root) for root in roots]
        self.endpoint_url = endpoint_url
        self.addressing_style = addressing_style
        self.timeout = timeout

    @classmethod
    def from_settings(cls) -> Self:
        return cls(
            roots=settings.PUBLISHING_S3_STORE_ROOTS,
            endpoint_url=settings.PUBLISHING_S3_ENDPOINT_URL,
            addressing_style=settings.PUBLISHING_S3_ADDRESSING_STYLE,
            timeout=settings.PUBLISHING_SUBMIT_TIMEOUT,
        )

    @property
    def endpoint(self) -> str:
        """The endpoint as it may be shown: any credentials in it redacted."""
        return redact_credentials(self.endpoint_url) if self.endpoint_url else "AWS S3"

    def validate(self, url: str) -> None:
        """An s3:// target must lie under one of the roots (PUBLISHING_S3_STORE_ROOTS): the workers write
        with their own credentials, which may reach buckets no user should."""
        location = parse_s3_url(url)
        if not self.roots:
            raise PermanentJobError(
                "s3:// targets are not allowed here (PUBLISHING_S3_STORE_ROOTS names no bucket)",
                code="TARGET_NOT_ALLOWED",
            )
        if not any(location.is_under(root) for root in self.roots):
            raise PermanentJobError(
                f"an s3:// target must lie under {' or '.join(root.url() for root in self.roots)}",
                code="TARGET_NOT_ALLOWED",
            )

    def client(self) -> Any:
        """A boto3 S3 client: one attempt a call (the job's retries do the rest), the configured timeouts."""
        config = Config(
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": self.addressing_style},
            # Only the checksum this store sends: no extra trailing checksums, which some S3 APIs refuse.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url or None, config=config)
        except ValueError as exc:
            # boto3 refuses a malformed endpoint URL when the client is made.
            raise PermanentJobError(
                f"the S3 store is misconfigured ({self.endpoint}): {redact_credentials(str(exc))}",
                code="TARGET_REJECTED",
            ) from exc

    def submit(
        self, artifact: Artifact, *, target_url: str, publishing_id: str, origin: Origin
    ) -> Submission:
        self.validate(target_url)
        location = parse_s3_url(target_url)
        folders, file_name, manifest_name = artifact_names(origin, publishing_id)
        target = _Object(location.bucket, location.key(*folders, file_name))
        with self._classified(target, artifact):
            client = self.client()
            stored = _stored_sha256(client, target)
            if stored is None:
                stored = _put_archive(client, target, artifact, publishing_id)
            if stored is None:
                logger.info("Stored artifact of publishing %s at %s", publishing_id, target.url)
            elif stored == artifact.sha256:
                logger.info("Artifact %s already stored with the same sha256; not rewriting it", target.url)
            else:
                raise PermanentJobError(
                    f"{target.url} already holds another archive (sha256 {stored or 'unknown'}) for "
                    "this publishing; it is never overwritten",
                    code="TARGET_CONFLICT",
                )
            # The manifest comes last: its presence says the archive beside it is complete.
            manifest_object = _Object(location.bucket, location.key(*folders, manifest_name))
            if not _exists(client, manifest_object):
                body = manifest(
                    artifact, publishing_id=publishing_id, origin=origin, file_name=file_name, uri=target.url
                )
                client.put_object(
                    Bucket=manifest_object.bucket,
                    Key=manifest_object.key,
                    Body=body,
                    ContentType="application/json",
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=base64.b64encode(_sha256(body)).decode("ascii"),
                )
        return Submission(uri=target.url, ref=publishing_id)

    @contextlib.contextmanager
    def _classified(self, target: _Object, artifact: Artifact) -> Iterator[None]:
        """Turn what boto3 raises into TransientJobError (retried) or PermanentJobError, with a detail
        that says what to do; credentials never appear in it."""
        try:
            yield
        except JobError:
            raise
        except botocore.exceptions.ClientError as exc:
            raise _answer_error(exc, target, artifact, self.endpoint) from exc
        except (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
            botocore.exceptions.IncompleteReadError,
        ) as exc:
            raise TransientJobError(
                f"S3 endpoint {self.endpoint} unavailable for {target.url}: {redact_credentials(str(exc))}",
                code="TARGET_UNAVAILABLE",
            ) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise PermanentJobError(
                "no S3 credentials on the worker: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or a profile or role boto3 finds)",
                code="TARGET_REJECTED",
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise PermanentJobError(
                f"S3 request for {target.url} failed: {redact_credentials(str(exc))}", code="TARGET_REJECTED"
            ) from exc


@dataclass(frozen=True)
class _Object:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _status(exc: botocore.exceptions.ClientError) -> tuple[int, str, str]:
    """The HTTP status, S3's error code (the status for an answer without a body, as to HEAD) and message."""
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    error = exc.response.get("Error", {})
    return status, str(error.get("Code") or status), str(error.get("Message") or "")


def _stored_sha256(client: Any, target: _Object) -> str | None:
    """The hex SHA-256 of the object at `target`, "" when it has none recorded, None when there is no object.

    A 403 counts as no object: credentials without s3:ListBucket get 403 for a missing key, and the
    conditional write that follows finds out whether one exists.
    """
    try:
        head = client.head_object(Bucket=target.bucket, Key=target.key, ChecksumMode="ENABLED")
    except botocore.exceptions.ClientError as exc:
        if _status(exc)[0] in (403, 404):
            return None
        raise
    recorded = head.get("Metadata", {}).get("sha256", "")
    if recorded:
        return str(recorded)
    checksum = str(head.get("ChecksumSHA256") or "")
    if checksum and "-" not in checksum:
        return base64.b64decode(checksum).hex()
    return ""


def _exists(client: Any, target: _Object) -> bool:
    try:
        client.head_object(Bucket=target.bucket, Key=target.key)
    except botocore.exceptions.ClientError as exc:
        if _status(exc)[0] in (403, 404):
            return False
        raise
    return True


def _put_archive(client: Any, target: _Object, artifact: Artifact, publishing_id: str) -> str | None:
    """Write the archive unless an object is there already; None once written, else that object's SHA-256."""
    try:
        body = artifact.path.open("rb")
    except OSError as exc:
        raise PermanentJobError(f"artifact file cannot be read: {exc}", code="ARTIFACT_NOT_FOUND") from exc
    try:
        with body:
            client.put_object(
                Bucket=target.bucket,
                Key=target.key,
                Body=body,
                ContentType="application/gzip",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(bytes.fromhex(artifact.sha256)).decode("ascii"),
                Metadata={
                    "sha256": artifact.sha256,
                    "publishing-id": publishing_id,
                    # The id only (metadata travels as ASCII headers); the manifest has subject and author.
                    **({"commit-sha": artifact.commit.sha} if artifact.commit else {}),
                },
                IfNoneMatch="*",
            )
    except botocore.exceptions.ClientError as exc:
        if _status(exc)[1] not in WRITE_CONFLICT_CODES:
            raise
        stored = _stored_sha256(client, target)
        if stored is None:
            raise PermanentJobError(
                f"{target.url} already exists and these credentials may not read it to compare",
                code="TARGET_CONFLICT",
            ) from exc
        return stored
    return None


def _answer_error(
    exc: botocore.exceptions.ClientError, target: _Object, artifact: Artifact, endpoint: str
) -> JobError:
    status, code, message = _status(exc)
    said = redact_credentials(f"{status} {code}" + (f": {message}" if message else ""))
    if code in CHECKSUM_MISMATCH_CODES:
        return PermanentJobError(
            f"the store found another SHA-256 in what it received for {target.url} than the artifact's "
            f"({artifact.sha256}): the archive changed after it was packaged, or was damaged on the way "
            f"({said})",
            code="TARGET_CHECKSUM_MISMATCH",
        )
    if code == "NoSuchBucket":
        return PermanentJobError(
            f"bucket {target.bucket!r} does not exist at {endpoint}: create it, or correct the target",
            code="TARGET_REJECTED",
        )
    if status == 403 or code in ACCESS_DENIED_CODES:
        return PermanentJobError(
            f"access denied to {target.url} at {endpoint} ({said}): the workers' S3 credentials may not "
            "write there (they need s3:PutObject and s3:GetObject on the prefix)",
            code="TARGET_REJECTED",
        )
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or status == 301:
        return PermanentJobError(
            f"bucket {target.bucket!r} is in another region than the workers' ({said}): "
            "set AWS_DEFAULT_REGION",
            code="TARGET_REJECTED",
        )
    if is_transient_status(status) or code in TRANSIENT_CODES:
        return TransientJobError(
            f"S3 at {endpoint} answered {said} for {target.url}", code="TARGET_UNAVAILABLE"
        )
    return PermanentJobError(f"S3 at {endpoint} refused {target.url}: {said}", code="TARGET_REJECTED")
