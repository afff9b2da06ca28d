"""Failed logins throttled per username and per client address: the token endpoint, the admin's login
and the browsable API's login, with the budget in the throttle cache (Redis in production)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.test import Client
from rest_framework.test import APIClient

from publisher_project.settings import base, validation
from publishing.api import throttling
from tests.factories import UserFactory
from tests.support.api import BrokenCache, assert_error

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token/"
# A fixed moment well inside a clock-aligned minute: the budget's window never rolls over mid-test.
NOW = 1_800_000_010.0


@pytest.fixture
def login_throttle(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """3 failed logins a minute per username and 5 per address, on fresh caches, at a fixed moment."""
    settings.LOGIN_FAILURES_PER_USERNAME = (3, 60.0)
    settings.LOGIN_FAILURES_PER_ADDRESS = (5, 60.0)
    caches["throttle"].clear()
    caches["default"].clear()
    throttling.login_breaker.reset()
    monkeypatch.setattr(throttling, "_clock", lambda: NOW)
    yield settings
    throttling.login_breaker.reset()


@pytest.fixture
def alice(db) -> User:
    user = UserFactory.create(username="alice")
    user.set_password("right-password")
    user.save()
    return user


def token(username: str, password: str, *, address: str = "198.51.100.7", **headers: Any) -> Any:
    client = APIClient(REMOTE_ADDR=address, **headers)
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json")


def test_the_token_endpoint_answers_429_once_a_username_has_failed_too_often(login_throttle, alice) -> None:
    # Given three wrong passwords for alice, each from another address
    for n in range(3):
        assert token("alice", "guess", address=f"203.0.113.{n}").status_code == 400

    # When anyone tries alice again, from yet another address, even with her password
    response = token("alice", "right-password", address="203.0.113.99")

    # Then it is throttled in the envelope, saying when to come back (the end of the minute)
    assert_error(response, 429)
    assert response["Retry-After"] == "50"
    assert "Too many failed logins" in response.json()["detail"]
    assert "token" not in response.json()


def test_a_username_budget_is_alices_alone_and_ignores_case_and_spaces(login_throttle, alice) -> None:
    # Given alice's budget spent under spellings of her name that the login form takes as hers
    for spelling in ("alice", "ALICE", " Alice "):
        assert token(spelling, "guess", address="203.0.113.1").status_code == 400

    # Then alice is throttled, and bob, from another address, is not
    assert token("alice", "right-password", address="203.0.113.2").status_code == 429
    UserFactory.create(username="bob").set_password("bobs")
    assert token("bob", "nope", address="203.0.113.3").status_code == 400


def test_one_address_trying_many_usernames_is_throttled(login_throttle, alice) -> None:
    # Given five failed logins from one address, each for another username
    for n in range(5):
        assert token(f"user{n}", "guess").status_code == 400

    # When that address tries alice, with her password
    response = token("alice", "right-password")

    # Then it is throttled; alice herself, from elsewhere, still gets her token
    assert_error(response, 429)
    assert token("alice", "right-password", address="192.0.2.10").status_code == 200


def test_a_forged_x_forwarded_for_does_not_give_an_address_a_fresh_budget(login_throttle, alice) -> None:
    # Given five failed logins from one address, each claiming another client behind a proxy
    for n in range(5):
        assert token(f"user{n}", "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code == 400

    # Then the sixth is throttled whatever it claims: without NUM_PROXIES no header is believed
    assert token("alice", "right-password", HTTP_X_FORWARDED_FOR="10.0.0.200").status_code == 429


def test_successful_logins_spend_no_budget(login_throttle, alice) -> None:
    answers = [token("alice", "right-password").status_code for _ in range(8)]
    assert answers == [200] * 8


@pytest.mark.parametrize("path", ["/admin/login/", "/api-auth/login/"])
def test_the_login_pages_answer_429_once_a_username_has_failed_too_often(
    login_throttle, alice, path: str
) -> None:
    # Given alice staff (the admin wants it) and three wrong passwords for her on the page
    alice.is_staff = True
    alice.save()
    browser = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(3):
        answer = browser.post(path, {"username": "alice", "password": "guess"})
        assert answer.status_code == 200  # the form again, with its error

    # When she, or someone, posts the right password
    response = browser.post(path, {"username": "alice", "password": "right-password"})

    # Then the page is throttled, saying when to come back, and no session was opened
    assert response.status_code == 429
    assert response["Retry-After"] == "50"
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in browser.session


@pytest.mark.parametrize("path", ["/admin/login/", "/api-auth/login/"])
def test_a_login_page_logs_in_under_the_budget_and_gives_it_back(login_throttle, alice, path: str) -> None:
    alice.is_staff = True
    alice.save()
    for _ in range(5):
        browser = Client(REMOTE_ADDR="198.51.100.7")
        answer = browser.post(path, {"username": "alice", "password": "right-password"})
        assert answer.status_code == 302
        assert browser.session["_auth_user_id"] == str(alice.pk)


def test_the_budgets_are_shared_by_the_token_endpoint_and_the_pages(login_throttle, alice) -> None:
    # Given two failures on the token endpoint and one on the admin's page
    assert token("alice", "guess").status_code == 400
    assert token("alice", "guess").status_code == 400
    admin = Client(REMOTE_ADDR="198.51.100.8").post("/admin/login/", {"username": "alice", "password": "x"})
    assert admin.status_code == 200

    # Then the browsable API's page refuses the next
    response = Client().post("/api-auth/login/", {"username": "alice", "password": "right-password"})
    assert response.status_code == 429


@pytest.mark.parametrize("rate", ["0", ""])
def test_a_rate_of_0_or_empty_turns_a_budget_off(login_throttle, alice, rate: str) -> None:
    login_throttle.LOGIN_FAILURES_PER_USERNAME = validation.parse_rate(rate)
    login_throttle.LOGIN_FAILURES_PER_ADDRESS = validation.parse_rate(rate)
    answers = [token("alice", "guess").status_code for _ in range(8)]
    assert answers == [400] * 8


def test_a_window_that_has_passed_gives_the_budget_back(login_throttle, alice, monkeypatch) -> None:
    # Given alice throttled
    for _ in range(3):
        token("alice", "guess")
    assert token("alice", "right-password").status_code == 429

    # When the minute has passed
    monkeypatch.setattr(throttling, "_clock", lambda: NOW + 60)

    # Then she logs in
    assert token("alice", "right-password").status_code == 200


@pytest.fixture
def broken_login_cache(login_throttle: Any) -> Iterator[None]:
    broken = {"BACKEND": f"{BrokenCache.__module__}.BrokenCache"}
    login_throttle.CACHES = {**login_throttle.CACHES, "throttle": broken}
    BrokenCache.calls = 0
    yield
    throttling.login_breaker.reset()


def test_with_redis_down_logins_are_still_throttled_per_process_and_never_fail(
    broken_login_cache, alice, caplog
) -> None:
    # Given the throttle's shared cache raising on every call (Redis down)

    # When an address fails to log in again and again
    answers = [token("alice", "guess").status_code for _ in range(3)]
    then = token("alice", "right-password")

    # Then nothing failed with a 500, and this process counted on its own: the fourth is throttled
    assert answers == [400, 400, 400]
    assert then.status_code == 429
    # And the shared cache was tried once, then left alone for its cool-down, with one warning
    assert BrokenCache.calls == 1
    warnings = [r for r in caplog.records if "throttle cache unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "this process counts failed logins on its own" in warnings[0].getMessage()


def test_with_redis_hung_a_login_costs_one_short_timeout(login_throttle, alice) -> None:
    # Given the production throttle cache on a Redis that accepts connections and never answers
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    hung = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    production = {**base.CACHES["throttle"], "LOCATION": hung}
    login_throttle.CACHES = {**login_throttle.CACHES, "throttle": production}
    try:
        # When alice logs in twice
        started = time.monotonic()
        first = token("alice", "right-password")
        took = time.monotonic() - started
        second = token("alice", "right-password")
    finally:
        server.close()

    # Then both get a token; the first waited one short timeout at most
    assert (first.status_code, second.status_code) == (200, 200)
    assert took < 10


def test_the_schema_documents_429_and_retry_after_for_the_token_endpoint() -> None:
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    too_many = schema["paths"][TOKEN_URL]["post"]["responses"]["429"]
    assert too_many["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "Retry-After" in too_many["headers"]
    assert {e["value"]["code"] for e in too_many["content"]["application/json"]["examples"].values()} == {
        "THROTTLED"
    }
