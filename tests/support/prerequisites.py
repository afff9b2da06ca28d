"""What a test needs from the machine: missing, it fails in CI (which provides it) and skips elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(what: str, *, ci_hint: str) -> NoReturn:
    """Fail when CI is set (`ci_hint` says how CI provides `what`), else skip saying what is missing."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: {ci_hint}")
    pytest.skip(what)


def require_root(why: str = "the test switches to other users") -> None:
    """Root, for a test that runs processes or owns files as other users (`@pytest.mark.needs_root`)."""
    if os.geteuid() != 0:
        missing(f"root: {why}", ci_hint=".ci/run runs as root")
