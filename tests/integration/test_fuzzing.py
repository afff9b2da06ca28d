"""API fuzzing: schemathesis drives every operation of /api/schema/ against the WSGI app.

As a user with a token and as an anonymous caller, each operation gets its documented examples,
schema-valid and schema-violating inputs; every answer must be documented (status, headers,
body), no answer may be a 500, valid input must not be refused and invalid input must not be
accepted. Then, as the token user, schemathesis chains the operations through the links it infers
from the schema (create a project, change it, publish it, cancel, retry, delete it, read what is
left), so that writes meet the objects that earlier writes made, not only ids that exist nowhere.

In process, on the test database and the stub broker: the subject is the HTTP contract, not the
job system (the other integration tests run that on a real Redis with real workers). With the
stub, initiate and retry answer 202 whenever their input allows, and a run leaves nothing behind.
Deterministic: a fixed seed, derandomized generation and no example database, so CI sees the same
inputs every run. About 2,800 requests in 35 s of CPU. FUZZ_SCALE=N multiplies every example budget by N for a
longer run (docs/reliability.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import dramatiq
import hypothesis
import pytest
import schemathesis
from django.core import signals
from django.core.cache import caches
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, settings
from rest_framework.authtoken.models import Token
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES

from publishing.api import examples
from publishing.api.throttling import breaker
from tests.factories import ProjectFactory, PublishingFactory, UserFactory

pytestmark = pytest.mark.integration

# A longer run: FUZZ_SCALE=10 (docs/reliability.md).
FUZZ_SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
MAX_EXAMPLES = 25 * FUZZ_SCALE
# Scenarios of a few calls each, through the links schemathesis infers between operations.
WORKFLOWS = 40 * FUZZ_SCALE
WORKFLOW_STEPS = 8

# Alice's token, fixed so that schemathesis sends it as the schema's own `tokenAuth`: it then knows
# the credentials are real, and checks that each operation refuses the same call without them.
TOKEN_KEY = "5eed" * 10

SETTINGS: dict[str, Any] = {
    "seed": 20261130,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "operations": [
        {
            # Valid JSON is not yet a valid project or a valid login. Whether a repository URL
            # is allowed (scheme, host policy, scp form, local paths by setting), whether a slug
            # is free, whether a password is right and whether a `commit` is a full commit id or
            # a tag name git would take (no `..`, `@{`, leading dash...) cannot be said in JSON
            # Schema, so a schema-valid body may fairly be refused with 400 VALIDATION_ERROR here.
            # Every other check still runs on these operations, and 400 stays refused on all others.
            "include-name": [
                "POST /api/v1/auth/token/",
                "POST /api/v1/projects/",
                "PATCH /api/v1/projects/{id}/",
                "POST /api/v1/publishing/initiate",
            ],
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "400"]
                }
            },
        }
    ],
}

wsgi = get_wsgi_application()
as_alice = schemathesis.openapi.from_wsgi(
    "/api/schema/?format=json",
    wsgi,
    config=SchemathesisConfig.from_dict(
        {**SETTINGS, "auth": {"openapi": {"tokenAuth": {"api_key": f"Token {TOKEN_KEY}"}}}}
    ),
)
anonymous = schemathesis.openapi.from_wsgi(
    "/api/schema/?format=json", wsgi, config=SchemathesisConfig.from_dict(SETTINGS)
)

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
    key: str = Token.objects.create(user=alice, key=TOKEN_KEY).key
    return key


@as_alice.parametrize()
@FUZZ_SETTINGS
def test_the_api_keeps_its_contract_for_a_user_with_a_token(case: schemathesis.Case[Any], token: str) -> None:
    case.call_and_validate()


@anonymous.parametrize()
@FUZZ_SETTINGS
def test_the_api_keeps_its_contract_for_an_anonymous_caller(case: schemathesis.Case[Any], app: None) -> None:
    case.call_and_validate()


class AliceWorkflows(as_alice.as_state_machine()):  # type: ignore[misc]
    """Scenarios as alice, each from the same state: its writes are rolled back after it.

    Hypothesis replays a failing scenario to shrink it, and the replay must meet the state the
    first run met: rows, queued messages and the initiate throttle's count alike.
    """

    def setup(self) -> None:
        caches["throttle"].clear()
        dramatiq.get_broker().flush_all()
        self._scenario = transaction.atomic()
        self._scenario.__enter__()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._scenario.__exit__(None, None, None)


def test_the_api_keeps_its_contract_through_workflows_of_a_user_with_a_token(token: str) -> None:
    # Given alice's project and publishing (the test settings allow any source and target)
    # When schemathesis chains the operations, each answer's ids feeding the next calls
    # Then every answer of every step is as documented, and none is a 500
    AliceWorkflows.run(
        settings=hypothesis.settings(
            max_examples=WORKFLOWS,
            stateful_step_count=WORKFLOW_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
    )
