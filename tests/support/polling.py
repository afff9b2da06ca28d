"""Waiting for an asynchronous outcome: poll it with a deadline, never sleep a fixed time and hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    message: str | Callable[[], str] = "the condition never held",
    *,
    interval: float = 0.05,
) -> T:
    """Call `predicate` until it returns something truthy, and return that (None or False: not yet).

    Raises AssertionError with `message` (a string, or a callable for one that is costly to build, such
    as the processes' logs) once `timeout` seconds have passed; the predicate is tried once more at the
    deadline, so a slow machine never fails a condition that holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"after {timeout:g} s: {text}")
        time.sleep(interval)


def wait_while(
    predicate: Callable[[], object],
    timeout: float,
    message: str | Callable[[], str] = "the condition held throughout",
    *,
    interval: float = 0.05,
) -> None:
    """Wait until `predicate` is falsy; AssertionError with `message` if it still holds after `timeout`."""
    wait_until(lambda: not predicate(), timeout, message, interval=interval)
