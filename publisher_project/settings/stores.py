"""Where sources may come from, how artifacts are packed and where they may go: private hosts, file://
and s3:// stores."""

from __future__ import annotations

import os
import re

from .validation import each, read_bool, read_int, read_list, read_str

__all__ = [
    "PUBLISHING_ALLOW_LOCAL_SOURCES",
    "PUBLISHING_ALLOW_PRIVATE_TARGETS",
    "PUBLISHING_ARTIFACT_COMPRESSION_LEVEL",
    "PUBLISHING_FILE_STORE_ROOTS",
    "PUBLISHING_S3_ADDRESSING_STYLE",
    "PUBLISHING_S3_ENDPOINT_URL",
    "PUBLISHING_S3_STORE_ROOTS",
    "PUBLISHING_STORE_GROUP",
]

# Allows file:// and local-path repositories.
PUBLISHING_ALLOW_LOCAL_SOURCES: bool = read_bool("PUBLISHING_ALLOW_LOCAL_SOURCES", False)
# Allows loopback, private and link-local hosts as sources, targets and webhook receivers.
PUBLISHING_ALLOW_PRIVATE_TARGETS: bool = read_bool("PUBLISHING_ALLOW_PRIVATE_TARGETS", False)
# The gzip level of the artifact's tar.gz: 1 fastest, 9 smallest, 0 stored uncompressed. 6, gzip's own
# default, was within 0.8 % of 9's size in two thirds of its time on a site of text pages. The same
# commit gives the same bytes, and so the same sha256, only at the same level and with the same zlib.
PUBLISHING_ARTIFACT_COMPRESSION_LEVEL: int = read_int(
    "PUBLISHING_ARTIFACT_COMPRESSION_LEVEL", 6, minimum=0, maximum=9
)

# The folders file:// targets may lie under, absolute, comma-separated; none (the default) allows
# no file:// target. The worker writes there with its own rights, which reach much further than
# any user's: every other folder stays out of a target's reach.
PUBLISHING_FILE_STORE_ROOTS: list[str] = each(
    "PUBLISHING_FILE_STORE_ROOTS",
    [os.path.normpath(root) for root in read_list("PUBLISHING_FILE_STORE_ROOTS", [])],
    os.path.isabs,
    "absolute folders, comma-separated",
)
# A file:// store's folders and files are the worker's user's only (0700/0600); with a group name
# or gid here they are also readable by that group (0750/0640), e.g. a web server that serves them.
PUBLISHING_STORE_GROUP: str = read_str("PUBLISHING_STORE_GROUP", "")
# s3:// stores (publishing/pipeline/stores/s3.py; docs/deployment.md for AWS S3, MinIO and R2). The
# places s3:// targets may lie under, `s3://bucket` or `s3://bucket/prefix`, comma-separated; none (the
# default) allows no s3:// target: the workers' credentials may reach buckets no user should.
PUBLISHING_S3_STORE_ROOTS: list[str] = each(
    "PUBLISHING_S3_STORE_ROOTS",
    read_list("PUBLISHING_S3_STORE_ROOTS", []),
    lambda root: bool(re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?", root)),
    "s3://bucket or s3://bucket/prefix, comma-separated",
)
# The S3 API's address: empty for AWS S3; MinIO's or R2's URL otherwise. Credentials and region
# come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).
PUBLISHING_S3_ENDPOINT_URL: str = read_str("PUBLISHING_S3_ENDPOINT_URL", "")
# How requests name the bucket: auto, path (http://host/bucket/key: most MinIO setups) or virtual
# (http://bucket.host/key).
PUBLISHING_S3_ADDRESSING_STYLE: str = read_str(
    "PUBLISHING_S3_ADDRESSING_STYLE", "auto", choices=("auto", "path", "virtual")
)
