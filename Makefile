# Publisher: `make run` serves it all locally, `make test` runs every check and test.
SHELL := /bin/bash
.SHELLFLAGS := -o errexit -o nounset -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANAGE := $(BIN)/python manage.py

.PHONY: help install run migrate demo check lint format typecheck migrations-check test test-unit test-integration test-postgres requirements clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements/base.txt requirements/dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/base.txt -r requirements/dev.txt
	@touch $@

install: $(STAMP)  ## Create .venv and install the pinned dependencies

migrate: install  ## Apply migrations to the local database (var/)
	@mkdir -p var
	$(MANAGE) migrate --no-input

demo: migrate  ## Create the demo user and project
	$(MANAGE) bootstrap_demo --port $${PORT:-8000}

run: demo  ## Web server, worker and (if needed) an embedded Redis on 127.0.0.1:$${PORT:-8000}
	exec $(MANAGE) runlocal

lint: install  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install  ## mypy (strict, django-stubs, drf-stubs)
	$(BIN)/mypy publisher_project publishing tests

migrations-check: install  ## Fail when models and migrations disagree
	DJANGO_SETTINGS_MODULE=publisher_project.settings.test $(MANAGE) makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=publisher_project.settings.test $(MANAGE) check

check: lint typecheck migrations-check  ## Every static check

test-unit: install  ## Unit tests only (stub broker, no network)
	$(BIN)/pytest tests/unit

test-integration: install  ## Integration tests only (real Redis, real workers)
	$(BIN)/pytest tests/integration

test: check  ## Every check, then the whole suite on SQLite (and on PostgreSQL when TEST_POSTGRES_URL is set)
	$(BIN)/pytest tests
	@if [ -n "$${TEST_POSTGRES_URL:-}" ]; then \
		echo "--- the whole suite again on PostgreSQL ($${TEST_POSTGRES_URL%%\?*})"; \
		DATABASE_URL="$$TEST_POSTGRES_URL" $(BIN)/pytest tests; \
	fi

test-postgres: install  ## The whole suite on PostgreSQL (TEST_POSTGRES_URL, default the local server)
	DATABASE_URL="$${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/publisher}" $(BIN)/pytest tests

requirements:  ## Re-pin requirements/*.txt from requirements/*.in
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements/base.in -o requirements/base.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements/dev.in -o requirements/dev.txt

clean:  ## Remove the virtualenv and local state
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
