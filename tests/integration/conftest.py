"""Integration fixtures: a real Redis, real web and worker processes, the real test database.

They never skip: where Redis is missing they fail, so CI cannot go green
without running them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
import redis
from django.db import connection
from rest_framework.authtoken.models import Token

from publishing.redis_server import RedisServer
from tests.factories import ProjectFactory, UserFactory
from tests.fakes import git_repository
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis at REDIS_URL when set (it must answer), else a private one started for the session."""
    url = os.environ.get("REDIS_URL")
    if url:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        except redis.exceptions.RedisError as exc:
            pytest.fail(f"REDIS_URL={url} does not answer ({exc}); integration tests need a real Redis")
        yield url
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, free to stop, freeze, flush and restart."""
    server = RedisServer(tmp_path / "private-redis").start()
    yield server
    server.stop()


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (never a FLUSH)."""
    prefix = f"publisher-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    except redis.exceptions.RedisError:
        pass


@pytest.fixture
def database_url(transactional_db: None) -> str:
    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    host = settings_dict["HOST"] or "127.0.0.1"
    credentials = f"{settings_dict['USER']}:{settings_dict['PASSWORD']}"
    return f"postgres://{credentials}@{host}:{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"


@pytest.fixture
def make_stack(
    database_url: str, namespace: str, redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    """Stacks on `broker_url`; with a RabbitMQ broker, aborts and the rate limit use the session's Redis."""
    stacks: list[Stack] = []

    def make(broker_url: str, **extra_env: str) -> Stack:
        stack = Stack(
            database_url=database_url,
            broker_url=broker_url,
            redis_url=broker_url if broker_url.startswith(("redis", "unix")) else redis_url,
            namespace=namespace,
            workdir=tmp_path,
            **extra_env,
        )
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def rabbitmq_url() -> str:
    url = os.environ.get("RABBITMQ_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("RABBITMQ_URL is not set: .ci/run exports it once RabbitMQ answers")
        pytest.skip("set RABBITMQ_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) to run the RabbitMQ test")
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except pika.exceptions.AMQPError as exc:
        pytest.fail(f"RABBITMQ_URL={url} does not answer: {exc}")
    return url


@pytest.fixture
def queue_name(rabbitmq_url: str) -> Iterator[str]:
    """A queue of this test's own on the shared RabbitMQ, deleted afterwards."""
    name = f"publisher-test-{uuid.uuid4().hex[:12]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    # The builds queue and the webhooks one (`<name>-webhooks`), each with its delay and dead-letter queues.
    for base in (name, f"{name}-webhooks"):
        for queue in (base, f"{base}.DQ", f"{base}.XQ"):
            channel.queue_delete(queue)
    connection.close()


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def make_broker_stack(request: pytest.FixtureRequest, make_stack, redis_url: str) -> Callable[..., Stack]:
    """Stacks on Redis, then on RabbitMQ (with a queue of the test's own): one test, both brokers."""
    if request.param == "redis":
        return lambda **env: make_stack(redis_url, **env)
    url = request.getfixturevalue("rabbitmq_url")
    queue = request.getfixturevalue("queue_name")
    return lambda **env: make_stack(url, PUBLISHING_QUEUE=queue, **env)


# `python3 build.py [--sleep S] [--beacon TOKEN]`: a build that can take its time; the token in its
# command line lets a test find its process (tests/integration/beacon.py).
BUILD_SCRIPT = """\
import pathlib, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print("build started", flush=True)
time.sleep(float(args.get("--sleep", 0)))
pathlib.Path("dist").mkdir(exist_ok=True)
html = pathlib.Path("site/index.html").read_text().replace("{{ title }}", "Built")
pathlib.Path("dist/index.html").write_text(html)
print("build done")
"""


@pytest.fixture
def git_source(tmp_path: Path) -> Path:
    """A local git repository with a small site and a build script."""
    files = {"site/index.html": "<h1>{{ title }}</h1>\n", "build.py": BUILD_SCRIPT}
    return git_repository(tmp_path / "source", files)


@pytest.fixture
def owner_token(transactional_db: None) -> tuple[object, str]:
    user = UserFactory.create(username="integration")
    return user, Token.objects.create(user=user).key


@pytest.fixture
def make_project(owner_token, git_source: Path):
    def make(target_url: str, *, build_args: str = "", **fields: str):
        user, _ = owner_token
        fields.setdefault("build_command", f"python3 build.py {build_args}".strip())
        return ProjectFactory.create(
            owner=user, repository_url=str(git_source), artifact_path="dist", target_url=target_url, **fields
        )

    return make
