from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from publisher_project.settings import base, validation
from tests.support.manage import PRODUCTION_ENV, run_manage

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "publisher_project" / "settings"
# The modules of one concern each, which base gathers.
CONCERNS = ["api", "broker", "builds", "core", "jobs", "stores", "webhooks"]


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
    assert base.PUBLISHING_RATE_LIMIT == (5, 60.0)
    assert base.PUBLISHING_SHUTDOWN_TIMEOUT == 30
    assert base.PUBLISHING_RETENTION_FAILED == 500
    # A completed job leaves no record: nothing for a retention of completed ones to prune
    assert not hasattr(base, "PUBLISHING_RETENTION_COMPLETED")
    assert not base.PUBLISHING_ALLOW_LOCAL_SOURCES
    assert not base.PUBLISHING_ALLOW_PRIVATE_TARGETS
    assert not base.PUBLISHING_ALLOW_USER_BUILD_COMMANDS
    assert base.PUBLISHING_ARTIFACT_COMPRESSION_LEVEL == 6


def test_middleware_is_spelled_out_without_prometheus() -> None:
    middleware = base.DRAMATIQ_BROKER["MIDDLEWARE"]
    assert "dramatiq.middleware.Retries" in middleware
    assert "django_dramatiq.middleware.DbConnectionsMiddleware" in middleware
    assert not any("Prometheus" in name for name in middleware)


@pytest.mark.parametrize("module", ["local", "test", "production"])
def test_only_the_concern_modules_read_the_environment(module: str) -> None:
    source = (SETTINGS / f"{module}.py").read_text()
    assert "env." not in source
    assert "read_" not in source
    assert "os.environ" not in source


@pytest.mark.parametrize("module", CONCERNS)
def test_a_concern_module_reads_the_environment_only_through_the_validation_helper(module: str) -> None:
    source = (SETTINGS / f"{module}.py").read_text()
    assert "os.environ" not in source
    assert "env.str" not in source
    assert "getenv" not in source


@pytest.mark.parametrize("module", CONCERNS)
def test_base_gives_every_setting_of_each_concern_module(module: str) -> None:
    # Given the settings a concern module sets (the upper-case names it assigns)
    concern = importlib.import_module(f"publisher_project.settings.{module}")
    tree = ast.parse((SETTINGS / f"{module}.py").read_text())
    targets = [
        n.target if isinstance(n, ast.AnnAssign) else n.targets[0]
        for n in tree.body
        if isinstance(n, ast.Assign | ast.AnnAssign)
    ]
    names = {t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_")}

    # Then its __all__ lists each of them, and base (so local, test and production) has them
    assert names <= set(concern.__all__)
    assert all(hasattr(base, name) for name in concern.__all__)


def _run_afresh(module: str) -> None:
    """Runs a settings module as a process's start does, leaving the loaded one alone."""
    spec = importlib.util.find_spec(f"publisher_project.settings.{module}")
    assert spec is not None
    assert spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def _validated_knobs() -> list[tuple[str, str, str]]:
    """(concern module, variable, a bad value) for every call of a validating reader in the package."""
    knobs = []
    for module in CONCERNS:
        tree = ast.parse((SETTINGS / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            reader = node.func.id
            if reader == "read_str" and not any(keyword.arg == "choices" for keyword in node.keywords):
                continue  # free text: nothing to refuse
            bad = BAD_VALUES.get(first.value) or BAD_VALUES.get(reader)
            if bad is not None:
                knobs.append((module, first.value, bad))
    return knobs


# A value each reader refuses; the lists' own checks need a value of their own.
BAD_VALUES = {
    "read_int": "lots",
    "read_float": "lots",
    "read_bool": "maybe",
    "read_str": "bogus",
    "read_matching": "lots",
    "read_parsed": "lots",
    "PUBLISHING_FILE_STORE_ROOTS": "relative/store",
    "PUBLISHING_S3_STORE_ROOTS": "http://bucket",
}


def test_the_validated_knobs_are_all_found() -> None:
    names = {name for _, name, _ in _validated_knobs()}
    assert len(names) >= 45
    assert {
        "PUBLISHING_SANDBOX_UIDS",
        "PUBLISHING_RATE_LIMIT",
        "PUBLISHING_FILE_STORE_ROOTS",
        "DEBUG",
    } <= names


@pytest.mark.parametrize(("module", "name", "bad"), _validated_knobs())
def test_each_validated_knob_refuses_a_bad_value_at_import_naming_it(
    monkeypatch: pytest.MonkeyPatch, module: str, name: str, bad: str
) -> None:
    # Given the variable set to a value it cannot take
    monkeypatch.setenv(name, bad)

    # When its settings module is run afresh (as at a process's start)
    with pytest.raises(ImproperlyConfigured) as refused:
        _run_afresh(module)

    # Then the start stops, naming the variable, its value and what it expects
    assert str(refused.value).startswith(f"{name}={bad!r}: expected ")


@pytest.mark.parametrize(
    ("module", "name", "value", "expected"),
    [
        ("jobs", "PUBLISHING_MAX_RETRIES", "-1", "a whole number, 0 or more"),
        ("jobs", "PUBLISHING_LEASE_TIMEOUT", "0", "a whole number, 1 or more"),
        ("broker", "PUBLISHING_BROKER_SOCKET_TIMEOUT", "-0.5", "a number, 0 or more"),
        ("jobs", "PUBLISHING_RATE_LIMIT", "5/0s", "N/Ds"),
        ("builds", "PUBLISHING_SANDBOX_UIDS", "0-10", "FIRST-LAST"),
        ("api", "PUBLISHING_INITIATE_RATE", "0/min", "N/s, N/min"),
        ("builds", "PUBLISHING_BUILD_NETWORK", "private", "'none' or 'public'"),
        ("stores", "PUBLISHING_ARTIFACT_COMPRESSION_LEVEL", "10", "a whole number from 0 to 9"),
        ("stores", "PUBLISHING_ARTIFACT_COMPRESSION_LEVEL", "-1", "a whole number from 0 to 9"),
    ],
)
def test_a_value_out_of_range_is_refused_too(
    monkeypatch: pytest.MonkeyPatch, module: str, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(f"{name}={value!r}: expected {expected}")):
        _run_afresh(module)


def test_the_readers_keep_what_they_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given values as operators write them: padded, in capitals, with empty list items
    monkeypatch.setenv("X_LIST", " a, ,b ,")
    monkeypatch.setenv("X_BOOL", " Yes ")
    monkeypatch.setenv("X_CHOICE", " Path ")
    monkeypatch.setenv("X_INT", " 7 ")

    # Then each reader gives the value it stands for; unset ones their default
    assert validation.read_list("X_LIST", []) == ["a", "b"]
    assert validation.read_bool("X_BOOL", False) is True
    assert validation.read_str("X_CHOICE", "auto", choices=("auto", "path")) == "path"
    assert validation.read_int("X_INT", 0) == 7
    assert validation.read_int("X_INT", 0, maximum=7) == 7
    assert validation.read_float("X_UNSET", 0.5) == 0.5
    assert validation.read_parsed("X_UNSET", "60000-60999", validation.parse_uid_range, "uids") == range(
        60000, 61000
    )


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("5/60s", (5, 60.0)),
        (" 10 / 1.5s ", (10, 1.5)),
        ("3/30", (3, 30.0)),
        ("10/hour", (10, 3600.0)),
        ("60/min", (60, 60.0)),
        ("2/s", (2, 1.0)),
        ("1000/day", (1000, 86400.0)),
        ("0", None),
        ("", None),
    ],
)
def test_a_rate_reads_as_a_count_per_seconds(text: str, rate: tuple[int, float] | None) -> None:
    # The one notation of every rate setting: N per D seconds, or per one of DRF's units
    assert validation.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["5", "five/60s", "0/60s", "5/0s", "-1/60s", "5/60m", "5/week", "5/hour/2"])
def test_a_malformed_rate_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(text)}$"):
        validation.parse_rate(text)


def test_a_uid_range_reads_as_the_uids_it_names() -> None:
    assert validation.parse_uid_range("60000-60999") == range(60000, 61000)
    assert validation.parse_uid_range(" 7 ") == range(7, 8)
    for bad in ("", "0-10", "10-5", "a-b", "60000-", "-1-5", "1-4294967295"):
        with pytest.raises(ValueError, match=f"^{re.escape(bad)}$"):
            validation.parse_uid_range(bad)


@pytest.mark.parametrize(
    ("name", "value"),
    [("PUBLISHING_RATE_LIMIT", "fast"), ("PUBLISHING_SANDBOX_UIDS", "all"), ("DEBUG", "maybe")],
)
def test_a_bad_value_stops_a_process_start_naming_the_variable(tmp_path: Path, name: str, value: str) -> None:
    # When a process starts with the variable set to a value it cannot take
    result = run_manage(
        tmp_path, "check", DJANGO_SETTINGS_MODULE="publisher_project.settings.local", **{name: value}
    )

    # Then it stops, and says which variable, which value and what it expects
    assert result.returncode != 0
    assert f"{name}={value!r}: expected" in result.stderr


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
    assert (base.LOGIN_FAILURES_PER_USERNAME, base.LOGIN_FAILURES_PER_ADDRESS) == ((10, 3600.0), (50, 3600.0))
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


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_production_builds_only_in_the_sandbox(tmp_path: Path, sandbox: str) -> None:
    # When production settings load with builds allowed outside the sandbox
    result = run_manage(tmp_path, "check", **PRODUCTION_ENV, PUBLISHING_BUILD_SANDBOX=sandbox)

    # Then the start stops, naming the setting, its value and what production wants
    assert result.returncode != 0
    expected = "expected required (or empty) in production"
    assert f"PUBLISHING_BUILD_SANDBOX={sandbox!r}: {expected}" in result.stderr
