"""tests/support/polling.py: the one way the suite waits for something to happen."""

from __future__ import annotations

import itertools

import pytest

from tests.support.polling import wait_until, wait_while


def test_wait_until_returns_the_first_truthy_answer() -> None:
    answers = iter([None, 0, "", "here", "later"])
    assert wait_until(lambda: next(answers), 5, interval=0) == "here"


def test_wait_until_fails_with_the_message_after_the_timeout_having_tried_at_the_deadline() -> None:
    calls = itertools.count(1)
    with pytest.raises(AssertionError, match=r"after 0\.1 s: never"):
        wait_until(lambda: next(calls) and False, 0.1, lambda: "never", interval=0.02)
    assert next(calls) >= 3  # the first try, some in between, and the one at the deadline


def test_wait_while_waits_for_the_condition_to_stop_holding() -> None:
    answers = iter([True, True, False])
    wait_while(lambda: next(answers), 5, interval=0)
    with pytest.raises(AssertionError, match="still there"):
        wait_while(lambda: True, 0.05, "still there", interval=0.01)
