"""A database that cannot be reached answers 503 SERVICE_UNAVAILABLE (retry later), never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import InterfaceError, OperationalError, ProgrammingError
from django.test import Client

from publishing.api import publishings
from tests.factories import UserFactory


def _raising(error: Exception) -> Any:
    def selector(*args: Any, **kwargs: Any) -> Any:
        raise error

    return selector


@pytest.mark.parametrize(
    "error",
    [OperationalError("connection to server was lost"), InterfaceError("connection already closed")],
)
def test_an_api_call_without_a_database_answers_503_with_retry_after(api, monkeypatch, error):
    # Given the database drops the connection under the view
    monkeypatch.setattr(publishings, "publishings_visible_to", _raising(error))

    # When
    response = api.get("/api/v1/publishing/")

    # Then the client is told to come back, in the API's error envelope
    assert response.status_code == 503
    assert response.json() == {"code": "SERVICE_UNAVAILABLE", "detail": "Database unavailable"}
    assert response["Retry-After"] == "5"


@pytest.mark.django_db
def test_an_admin_page_without_a_database_answers_503_in_plain_text(monkeypatch):
    # Given an administrator's session and a database that refuses connections
    client = Client()
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    monkeypatch.setattr(
        "publishing.admin.overview.selectors.system_overview", _raising(OperationalError("refused"))
    )

    # When
    response = client.get("/admin/publishing/publishing/overview/")

    # Then
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert b"database cannot be reached" in response.content


def test_a_bad_query_is_still_a_server_error(api, monkeypatch):
    # Given a bug, not an outage
    monkeypatch.setattr(publishings, "publishings_visible_to", _raising(ProgrammingError("no such column")))
    api.raise_request_exception = False

    # When
    response = api.get("/api/v1/publishing/")

    # Then it is not disguised as a 503
    assert response.status_code == 500
    assert response.json()["code"] == "INTERNAL_ERROR"


@pytest.mark.django_db
def test_a_database_error_outside_the_views_is_a_503_too(api, settings):
    # Given a middleware, not a view, that loses the database connection
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.unit.test_database_unavailable.LosesTheDatabase"]
    api.raise_request_exception = False

    # When
    response = api.get("/api/v1/")

    # Then handler500 answers as the middleware would have
    assert response.status_code == 503
    assert response.json()["code"] == "SERVICE_UNAVAILABLE"


class LosesTheDatabase:
    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")
