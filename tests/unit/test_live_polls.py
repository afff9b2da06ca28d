"""The development server's request log leaves out the live pages' successful polls, and only those."""

from __future__ import annotations

import logging

import pytest

from publishing.live_polls import LivePollsFilter

PUBLISHING = "1a2b3c4d-0000-4000-8000-000000000001"


def _request(line: str, status: int) -> logging.LogRecord:
    """A record as Django's runserver logs a request (django.core.servers.basehttp)."""
    record = logging.LogRecord(
        "django.server", logging.INFO, __file__, 1, '"%s" %s %s', (line, str(status), "12"), None
    )
    record.status_code = status
    return record


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/publishing/{PUBLISHING}/log?since=12",
        f"/publishings/{PUBLISHING}/?fragment=summary",
        "/admin/publishing/publishing/",
        "/admin/publishing/publishing/?status__exact=queued",
        "/admin/publishing/publishing/overview/",
        f"/admin/publishing/publishing/{PUBLISHING}/change/",
    ],
)
def test_a_successful_poll_is_left_out_and_its_error_stays(path: str) -> None:
    assert not LivePollsFilter().filter(_request(f"GET {path} HTTP/1.1", 200))
    assert LivePollsFilter().filter(_request(f"GET {path} HTTP/1.1", 403))
    assert LivePollsFilter().filter(_request(f"GET {path} HTTP/1.1", 500))


@pytest.mark.parametrize(
    "line",
    [
        f"GET /publishings/{PUBLISHING}/ HTTP/1.1",
        f"GET /api/v1/publishing/{PUBLISHING}/log HTTP/1.1",
        "GET /api/v1/health HTTP/1.1",
        "POST /admin/publishing/publishing/ HTTP/1.1",
        "GET /admin/publishing/project/ HTTP/1.1",
    ],
)
def test_every_other_request_stays(line: str) -> None:
    assert LivePollsFilter().filter(_request(line, 200))
