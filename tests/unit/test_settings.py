from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from publisher_project.settings import base
from tests.support.manage import PRODUCTION_ENV, run_manage

ROOT = Path(__file__).resolve().parents[2]


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    # When production settings are loaded without SECRET_KEY
    result = run_manage(tmp_path, "check", DJANGO_SETTINGS_MODULE="publisher_project.settings.production")

    # Then the process stops with a clear reason
    assert result.returncode != 0
    assert "SECRET_KEY must be set in production" in result.stderr


def test_manage_py_without_settings_runs_production_and_says_what_to_do_instead_of_a_traceback(
    tmp_path: Path,
) -> None:
    # When a developer runs a bare `manage.py check`: no DJANGO_SETTINGS_MODULE, no SECRET_KEY
    result = run_manage(tmp_path, "check")

    # Then it runs the production settings, which stop the start, saying how to pick the local
    # settings for development or what production needs, without a traceback
    assert result.returncode != 0, result.stdout + result.stderr
    assert "SECRET_KEY must be set in production" in result.stderr
    assert "DJANGO_SETTINGS_MODULE=publisher_project.settings.local" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_passes_check_deploy_with_its_required_environment(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        **PRODUCTION_ENV,
        ALLOWED_HOSTS="publisher.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("metrics", "starts"),
    [
        ({}, False),
        ({"METRICS_TOKEN": ""}, False),
        ({"METRICS_ALLOW_ANONYMOUS": "false"}, False),
        ({"METRICS_TOKEN": "a-scrape-token-of-prometheus"}, True),
        ({"METRICS_ALLOW_ANONYMOUS": "true"}, True),
    ],
)
def test_production_wants_a_metrics_token_unless_anonymous_scrapes_are_chosen(
    tmp_path: Path, metrics: dict[str, str], starts: bool
) -> None:
    # When production settings load without a metrics token, with one, or with anonymous scrapes chosen
    env = {key: value for key, value in PRODUCTION_ENV.items() if not key.startswith("METRICS_")}
    result = run_manage(tmp_path, "check", **env, **metrics)

    # Then only a token or the explicit choice starts; otherwise the start stops naming both settings
    assert (result.returncode == 0) is starts, result.stdout + result.stderr
    if not starts:
        assert "METRICS_TOKEN must be set in production" in result.stderr
        assert "METRICS_ALLOW_ANONYMOUS=true" in result.stderr


def test_the_job_defaults_are_the_specs() -> None:
    assert base.PUBLISHING_QUEUE == "publishing-builds"
    assert base.PUBLISHING_MAX_RETRIES == 3
    assert base.PUBLISHING_MIN_BACKOFF_MS == 2_000
    assert base.PUBLISHING_MAX_BACKOFF_MS == 300_000
    assert base.PUBLISHING_RATE_LIMIT == "5/60s"
    assert base.PUBLISHING_SHUTDOWN_TIMEOUT == 30
    assert (base.PUBLISHING_RETENTION_COMPLETED, base.PUBLISHING_RETENTION_FAILED) == (100, 500)
    assert not base.PUBLISHING_ALLOW_LOCAL_SOURCES
    assert not base.PUBLISHING_ALLOW_PRIVATE_TARGETS
    assert not base.PUBLISHING_ALLOW_USER_BUILD_COMMANDS


def test_middleware_is_spelled_out_without_prometheus() -> None:
    middleware = base.DRAMATIQ_BROKER["MIDDLEWARE"]
    assert "dramatiq.middleware.Retries" in middleware
    assert "django_dramatiq.middleware.DbConnectionsMiddleware" in middleware
    assert not any("Prometheus" in name for name in middleware)


@pytest.mark.parametrize("module", ["local", "test", "production"])
def test_only_base_reads_the_environment(module: str) -> None:
    source = (ROOT / "publisher_project" / "settings" / f"{module}.py").read_text()
    assert "env." not in source
    assert "os.environ" not in source


def test_the_initiate_throttle_counts_in_redis_and_never_waits_long_on_it() -> None:
    # 60 a minute per user by default, counted in Redis so that every web process shares the count
    assert base.PUBLISHING_INITIATE_RATE == "60/min"
    throttle = base.CACHES["throttle"]
    assert throttle["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert throttle["LOCATION"] == base.REDIS_URL
    # A request waits at most one short timeout on a sick Redis: no retries, no long socket waits
    options = throttle["OPTIONS"]
    assert options["socket_connect_timeout"] <= 1
    assert options["socket_timeout"] <= 1
    assert options["retry"].get_retries() == 0


def test_unit_tests_throttle_in_memory_and_only_when_a_test_asks() -> None:
    assert settings.CACHES["throttle"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    assert settings.PUBLISHING_INITIATE_RATE == "0"


@pytest.mark.parametrize(
    ("rate", "starts"), [("0", True), ("120/hour", True), ("lots", False), ("0/min", False)]
)
def test_an_initiate_rate_that_does_not_parse_stops_the_start(
    tmp_path: Path, rate: str, starts: bool
) -> None:
    # When the settings load with this rate
    result = run_manage(
        tmp_path,
        "check",
        DJANGO_SETTINGS_MODULE="publisher_project.settings.local",
        **{"PUBLISHING_INITIATE_RATE": rate},
    )

    # Then a valid one starts, and another stops the start saying which setting is wrong
    assert (result.returncode == 0) is starts, result.stdout + result.stderr
    if not starts:
        assert "PUBLISHING_INITIATE_RATE" in result.stderr


@pytest.mark.parametrize("name", ["LOGIN_FAILURES_PER_USERNAME", "LOGIN_FAILURES_PER_ADDRESS"])
def test_a_login_rate_that_does_not_parse_stops_the_start(tmp_path: Path, name: str) -> None:
    local = {"DJANGO_SETTINGS_MODULE": "publisher_project.settings.local"}
    result = run_manage(tmp_path, "check", **local, **{name: "lots"})
    assert result.returncode != 0
    assert f"{name}='lots'" in result.stderr


def test_failed_logins_are_throttled_in_redis_by_default() -> None:
    assert (base.LOGIN_FAILURES_PER_USERNAME, base.LOGIN_FAILURES_PER_ADDRESS) == ("10/hour", "50/hour")
    # No X-Forwarded-For is believed unless the operator says how many proxies append to it
    assert base.REST_FRAMEWORK["NUM_PROXIES"] == 0


@pytest.mark.parametrize(("value", "starts"), [("0", True), ("65536", True), ("-1", False)])
def test_a_negative_build_limit_stops_the_start(tmp_path: Path, value: str, starts: bool) -> None:
    # When the settings load with this output limit
    result = run_manage(
        tmp_path,
        "check",
        DJANGO_SETTINGS_MODULE="publisher_project.settings.local",
        PUBLISHING_BUILD_OUTPUT_LIMIT=value,
    )

    # Then 0 (off) and a positive limit start; a negative one stops the start, naming the setting
    assert (result.returncode == 0) is starts, result.stdout + result.stderr
    if not starts:
        assert "PUBLISHING_BUILD_OUTPUT_LIMIT" in result.stderr
