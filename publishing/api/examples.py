"""OpenAPI examples: what a request and its answers look like, shown in /api/docs/.

One realistic story throughout (the "Marketing site" project of user alice),
so that the examples of different endpoints agree with each other.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample

from publisher_project.errors import error_body

BASE = "https://publisher.example.com/api/v1"
PROJECT_ID = "3f1c2a9e-8d0b-4f55-9a51-1c7c0e2d6b10"
PUBLISHING_ID = "0b7e6f5a-4c3d-4e2f-8a1b-9c8d7e6f5a4b"
COMMIT_SHA = "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"
PUBLISHING_URL = f"{BASE}/publishing/{PUBLISHING_ID}"
RERUN_ID = "7c2d9e4f-1a3b-4c5d-9e8f-0a1b2c3d4e5f"

PROJECT: dict[str, Any] = {
    "id": PROJECT_ID,
    "url": f"{BASE}/projects/{PROJECT_ID}/",
    "name": "Marketing site",
    "slug": "marketing-site",
    "owner": "alice",
    "repository_url": "https://git.example.com/alice/marketing-site.git",
    "ref": "main",
    "build_command": "",
    "artifact_path": "dist",
    "target_url": "https://store.example.com/api/uploads",
    "webhook_url": "https://hooks.example.com/publisher",
    "webhook_secret_set": True,
    "created_at": "2026-11-02T09:12:44.301Z",
    "updated_at": "2026-11-02T09:12:44.301Z",
}

_PUBLISHING_LINKS: dict[str, Any] = {
    "id": PUBLISHING_ID,
    "url": f"{BASE}/publishing/{PUBLISHING_ID}",
    "cancel": f"{BASE}/publishing/{PUBLISHING_ID}/cancel",
    "retry": f"{BASE}/publishing/{PUBLISHING_ID}/retry",
    "rerun": f"{BASE}/publishing/{PUBLISHING_ID}/rerun",
    "log_url": f"{BASE}/publishing/{PUBLISHING_ID}/log",
    "project": PROJECT["url"],
    "project_id": PROJECT_ID,
    "requested_by": "alice",
}

QUEUED: dict[str, Any] = {
    **_PUBLISHING_LINKS,
    "status": "queued",
    "progress": 0,
    "attempts": 0,
    "error_code": "",
    "error_message": "",
    "requested_commit": "",
    "commit_sha": "",
    "commit_subject": "",
    "commit_author": "",
    "artifact_sha256": "",
    "artifact_size": None,
    "artifact_uri": "",
    "submission_ref": "",
    "message_id": "5d41402a-bc4b-4a76-b971-9d911017c592",
    "worker": "",
    "created_at": "2026-11-30T10:00:00.120Z",
    "queued_at": "2026-11-30T10:00:00.120Z",
    "not_before": None,
    "waiting": {"reason": "queue", "until": None, "attempt": 1, "max_attempts": 4},
    "started_at": None,
    "finished_at": None,
    "project_settings": {
        key: PROJECT[key] for key in ("repository_url", "ref", "build_command", "artifact_path", "target_url")
    },
    "attempt_history": [],
}

PUBLISHED: dict[str, Any] = {
    **QUEUED,
    "status": "published",
    "progress": 100,
    "attempts": 2,
    "commit_sha": COMMIT_SHA,
    "commit_subject": "Add the pricing page",
    "commit_author": "Alice Example <alice@example.com>",
    "artifact_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "artifact_size": 48213,
    "artifact_uri": "https://store.example.com/artifacts/9f86d081.tar.gz",
    "submission_ref": "upload-20931",
    "worker": "worker-1:4112",
    "started_at": "2026-11-30T10:00:00.180Z",
    "finished_at": "2026-11-30T10:00:14.902Z",
    "waiting": None,
    "attempt_history": [
        {
            "number": 1,
            "worker": "worker-1:4112",
            "started_at": "2026-11-30T10:00:00.180Z",
            "finished_at": "2026-11-30T10:00:09.511Z",
            "duration_seconds": 9.331,
            "outcome": "retrying",
            "error_code": "TARGET_UNAVAILABLE",
            "error_message": "the store answered 503",
            "commit_sha": COMMIT_SHA,
            "log_excerpt": "2026-11-30T10:00:09.200Z event    submit to https://store.example.com/api/uploads\n"
            "2026-11-30T10:00:09.511Z event    submit stopped in 0.3s\n",
        },
        {
            "number": 2,
            "worker": "worker-2:4120",
            "started_at": "2026-11-30T10:00:11.602Z",
            "finished_at": "2026-11-30T10:00:14.902Z",
            "duration_seconds": 3.3,
            "outcome": "published",
            "error_code": "",
            "error_message": "",
            "commit_sha": COMMIT_SHA,
            "log_excerpt": "2026-11-30T10:00:14.100Z event    submit to https://store.example.com/api/uploads\n"
            "2026-11-30T10:00:14.890Z event    submit done in 0.8s\n",
        },
    ],
}

CANCELLED: dict[str, Any] = {
    **QUEUED,
    "status": "cancelled",
    "attempts": 1,
    "error_code": "CANCELLED",
    "error_message": "Cancelled by alice.",
    "finished_at": "2026-11-30T10:00:03.007Z",
}


def _without(body: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in fields}


def error(code: str, detail: str, *, status: int, **extra: Any) -> OpenApiExample:
    """An answer in the error envelope every failure uses (`extra`: `errors`, `active_id`, `active_url`)."""
    return OpenApiExample(
        code, value=error_body(code, detail, **extra), response_only=True, status_codes=[str(status)]
    )


def invalid(field: str, message: str) -> OpenApiExample:
    return error("VALIDATION_ERROR", f"{field}: {message}", status=400, errors={field: [message]})


NOT_FOUND = error("NOT_FOUND", "Not found.", status=404)
NOT_AUTHENTICATED = error("NOT_AUTHENTICATED", "Authentication credentials were not provided.", status=401)
UNAVAILABLE = error("SERVICE_UNAVAILABLE", "Background job service unavailable", status=503)
THROTTLED = error("THROTTLED", "Request was throttled. Expected available in 42 seconds.", status=429)
# A browser session's write without the CSRF token (token authentication needs none).
CSRF_FAILED = error("PERMISSION_DENIED", "CSRF Failed: CSRF token missing.", status=403)

PROJECT_CREATE = [
    OpenApiExample(
        "A project with a webhook",
        value={
            "name": "Marketing site",
            "repository_url": PROJECT["repository_url"],
            "ref": "main",
            "artifact_path": "dist",
            "target_url": PROJECT["target_url"],
            "webhook_url": PROJECT["webhook_url"],
            "webhook_secret": "wh-7f3a0c9e51b24d8aa6c2",
        },
        request_only=True,
    ),
    OpenApiExample("Created", value=PROJECT, response_only=True, status_codes=["201"]),
    invalid("webhook_secret", "Required with a webhook URL: every delivery is signed with it."),
]
PROJECT_DETAIL = [OpenApiExample("A project", value=PROJECT, response_only=True), NOT_FOUND]
# drf-spectacular wraps a list's example in the page envelope itself: the value is one item.
PROJECT_LIST = [OpenApiExample("Your projects", value=PROJECT, response_only=True)]
PROJECT_UPDATE = [
    OpenApiExample("Publish another branch", value={"ref": "release"}, request_only=True),
    OpenApiExample("Stop the webhook", value={"webhook_url": "", "webhook_secret": ""}, request_only=True),
    OpenApiExample("Updated", value={**PROJECT, "ref": "release"}, response_only=True),
]
PROJECT_DELETE = [
    error(
        "CONFLICT",
        f"The project has a publishing building ({PUBLISHING_ID}): cancel it or let it end, then delete the "
        "project.",
        status=409,
        active_id=PUBLISHING_ID,
        active_url=PUBLISHING_URL,
    )
]

PUBLISHING_LIST = [
    OpenApiExample(
        "Newest first",
        value=_without(PUBLISHED, "project_settings", "attempt_history"),
        response_only=True,
    )
]
PUBLISHING_DETAIL = [
    OpenApiExample("Published on its second attempt", value=PUBLISHED, response_only=True),
    NOT_FOUND,
]
INITIATE = [
    OpenApiExample("Publish a project", value={"project_id": PROJECT_ID}, request_only=True),
    OpenApiExample(
        "Publish an earlier commit (a rollback)",
        value={"project_id": PROJECT_ID, "commit": COMMIT_SHA},
        request_only=True,
    ),
    OpenApiExample("Publish a tag", value={"project_id": PROJECT_ID, "commit": "v1.4.0"}, request_only=True),
    OpenApiExample("Queued", value=QUEUED, response_only=True, status_codes=["202"]),
    invalid("project_id", "Must be a valid UUID."),
    invalid("commit", "a commit id has 40 hex digits (64 in a SHA-256 repository), not 7"),
    error("NOT_FOUND", "Project not found.", status=404),
    error(
        "CONFLICT",
        "This project already has a publishing in progress.",
        status=409,
        active_id=PUBLISHING_ID,
        active_url=PUBLISHING_URL,
    ),
    CSRF_FAILED,
    THROTTLED,
    UNAVAILABLE,
]
CANCEL = [
    OpenApiExample("Cancelled", value=CANCELLED, response_only=True, status_codes=["200"]),
    error("CONFLICT", "The publishing is already published; it cannot be cancelled.", status=409),
]
RETRY = [
    OpenApiExample(
        "Queued again",
        value={**QUEUED, "attempts": 1, "queued_at": "2026-11-30T10:05:00.000Z"},
        response_only=True,
        status_codes=["202"],
    ),
    error("CONFLICT", "Only failed or cancelled publishings can be retried, not published.", status=409),
    THROTTLED,
    UNAVAILABLE,
]
_RERUN_LINKS = {
    key: f"{BASE}/publishing/{RERUN_ID}{tail}"
    for key, tail in (
        ("url", ""),
        ("cancel", "/cancel"),
        ("retry", "/retry"),
        ("rerun", "/rerun"),
        ("log_url", "/log"),
    )
}
RERUN = [
    OpenApiExample(
        "Queued at the commit it checked out",
        value={**QUEUED, "id": RERUN_ID, **_RERUN_LINKS, "requested_commit": COMMIT_SHA},
        response_only=True,
        status_codes=["202"],
    ),
    OpenApiExample(
        "CONFLICT: not finished",
        value=error_body("CONFLICT", "Only finished publishings can be re-run, not building."),
        response_only=True,
        status_codes=["409"],
    ),
    error(
        "CONFLICT",
        "This project already has a publishing in progress.",
        status=409,
        active_id=PUBLISHING_ID,
        active_url=PUBLISHING_URL,
    ),
    THROTTLED,
    UNAVAILABLE,
]
_LOG_LINES = [
    ("2026-11-30T10:00:00.180Z", 1, "event", "publisher", "attempt 1 started on worker-1:4112"),
    ("2026-11-30T10:00:00.181Z", 1, "event", "publisher", "checkout https://github.com/alice/site.git@main"),
    ("2026-11-30T10:00:01.401Z", 1, "event", "publisher", "checkout -> 3b18e512dba7 Add the pricing page"),
    ("2026-11-30T10:00:01.402Z", 1, "event", "publisher", "checkout done in 1.2s"),
    ("2026-11-30T10:00:01.403Z", 1, "event", "publisher", "build: make html"),
    ("2026-11-30T10:00:01.530Z", 1, "build", "output", "sphinx-build -b html docs _build/html"),
    ("2026-11-30T10:00:03.911Z", 1, "build", "output", "build succeeded, 2 warnings."),
]
LOG = [
    OpenApiExample(
        "Text (the default)",
        value="".join(f"{time} {step:<8} {text}\n" for time, _, step, _, text in _LOG_LINES),
        response_only=True,
        status_codes=["200"],
        media_type="text/plain",
    ),
    OpenApiExample(
        "JSON (Accept: application/json)",
        value={
            "cursor": "1042",
            "more": False,
            "complete": False,
            "dropped": 0,
            "lines": [
                {"time": time, "attempt": attempt, "step": step, "stream": stream, "text": text}
                for time, attempt, step, stream, text in _LOG_LINES
            ],
        },
        response_only=True,
        status_codes=["200"],
        media_type="application/json",
    ),
    invalid("since", "Not a cursor: give the cursor of a previous answer."),
    NOT_FOUND,
]
HEALTH = [
    OpenApiExample(
        "All up",
        value={"status": "ok", "database": "ok", "broker": "ok"},
        response_only=True,
        status_codes=["200"],
    ),
    OpenApiExample(
        "Broker down",
        value={"status": "unavailable", "database": "ok", "broker": "unavailable"},
        response_only=True,
        status_codes=["503"],
    ),
]
TOKEN = [
    OpenApiExample("Credentials", value={"username": "alice", "password": "…"}, request_only=True),
    OpenApiExample(
        "A token", value={"token": "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"}, response_only=True
    ),
    invalid("non_field_errors", "Unable to log in with provided credentials."),
    error(
        "THROTTLED",
        "Too many failed logins for this username or from this address. Expected available in 42 seconds.",
        status=429,
    ),
]
