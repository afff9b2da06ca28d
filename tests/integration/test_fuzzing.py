"""API fuzzing: schemathesis drives every operation of /api/schema/ against the WSGI app.

As a user with a token and as an anonymous caller, each operation gets its documented examples,
schema-valid and schema-violating inputs; every answer must be documented (status, headers,
body), no answer may be a 500, valid input must not be refused and invalid input must not be
accepted.

In process, on the test database and the stub broker: the subject is the HTTP contract, not the
job system (the other integration tests run that on a real Redis with real workers). With the
stub, initiate and retry answer 202 whenever their input allows, and a run leaves nothing behind.
Deterministic: a fixed seed, derandomized generation and no example database, so CI sees the same
inputs every run. About 30 s on 2 cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.cache import caches
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES

from publishing.api import examples
from publishing.api.throttling import breaker
from tests.factories import ProjectFactory, PublishingFactory, UserFactory

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20261130,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "operations": [
            {
                # Valid JSON is not yet a valid project or a valid login. Whether a repository URL
                # is allowed (scheme, host policy, scp form, local paths by setting), whether a slug
                # is free and whether a password is right cannot be said in JSON Schema, so a
                # schema-valid body may fairly be refused with 400 VALIDATION_ERROR here. Every
                # other check still runs on these operations, and 400 stays refused on all others.
                "include-name": [
                    "POST /api/v1/auth/token/",
                    "POST /api/v1/projects/",
                    "PATCH /api/v1/projects/{id}/",
                ],
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "400"]
                    }
                },
            }
        ],
    }
)

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)

# The function-scoped fixtures (a user, a token, seeded rows, the test transaction) are meant to
# be shared by every example of one operation: state builds up as it would on a real server.
FUZZ_SETTINGS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

TOKEN_PASSWORD = str(examples.TOKEN[0].value["password"])


@pytest.fixture
def app(db: None, stub_broker: Any, settings: Any) -> Iterator[None]:
    """The WSGI app on the test database, with the initiate throttle on and a clean slate."""
    # Django's own test client does the same: at the end of each request the handler would
    # otherwise close the connection that holds the test's transaction.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    # Low enough that the last of an operation's requests meet 429 THROTTLED (its body and
    # Retry-After are checked too), high enough that most reach validation and the service.
    settings.PUBLISHING_INITIATE_RATE = "40/min"
    caches["throttle"].clear()
    breaker.reset()
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(app: None) -> str:
    """The token of alice, who owns the project and the publishing the schema's examples name."""
    alice = UserFactory.create(username="alice", password=TOKEN_PASSWORD)
    project = ProjectFactory.create(owner=alice, id=examples.PROJECT_ID, slug="marketing-site")
    PublishingFactory.create(project=project, id=examples.PUBLISHING_ID, failed=True)
    # Someone else's, so that a leak between users would have something to show.
    PublishingFactory.create(project=ProjectFactory.create(owner=UserFactory.create(username="bob")))
    key: str = Token.objects.create(user=alice).key
    return key


@schema.parametrize()
@FUZZ_SETTINGS
def test_the_api_keeps_its_contract_for_a_user_with_a_token(case: schemathesis.Case[Any], token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Token {token}"})


@schema.parametrize()
@FUZZ_SETTINGS
def test_the_api_keeps_its_contract_for_an_anonymous_caller(case: schemathesis.Case[Any], app: None) -> None:
    case.call_and_validate()
