"""Reads each setting from the environment, and refuses a bad value at import, naming it.

The concern modules of this package read the environment only through these functions, so every bad
value stops the start the same way: `ImproperlyConfigured("NAME='value': expected ...")`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TypeVar

import environ
from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")
N = TypeVar("N", int, float)

# Read through django-environ as before: a value `$OTHER` stands for the variable OTHER's.
_env = environ.Env()

# django-environ's true words, and their opposites: any other word is refused rather than read as false.
TRUE_WORDS = frozenset({"true", "on", "ok", "y", "yes", "1"})
FALSE_WORDS = frozenset({"false", "off", "n", "no", "0", ""})
# DRF's throttle notation ("60/min"); "0" or "" is off.
DRF_RATE = r"0?|[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)"
# A rate: N per D seconds ("5/60s", "10/1.5s", "3/30") or per DRF's units ("10/hour"); "0" or "" is none.
_RATE = re.compile(
    r"\s*(?P<count>\d+)\s*/\s*"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)\s*s?|(?P<unit>s|sec|second|m|min|minute|h|hour|d|day))\s*"
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE_EXPECTED = "N/Ds (N per D seconds), N/s, N/min, N/hour, N/day, or 0 (none)"


def invalid(name: str, value: object, expected: str) -> ImproperlyConfigured:
    """The one error of a bad setting: its name, its value and what it should be."""
    return ImproperlyConfigured(f"{name}={value!r}: expected {expected}.")


# Defaults that a settings module building on base (local.py) gives before base is imported; a variable
# set in the environment still wins.
_defaults: dict[str, str] = {}


def default_unless_set(values: dict[str, str]) -> None:
    """Defaults for the concern modules imported after this call, all of `values` or none.

    None applies when any of their variables is set: a BROKER_URL given alone must not be paired with
    a REDIS_URL from elsewhere.
    """
    if all(_env.str(name, default=None) is None for name in values):
        _defaults.update(values)


def _raw(name: str) -> str | None:
    value: str | None = _env.str(name, default=_defaults.get(name))
    return value


def _or(value: str | None, default: str) -> str:
    return default if value is None else value


def read_str(name: str, default: str, *, choices: Iterable[str] | None = None) -> str:
    """The variable as it is; with `choices`, stripped, lowercased and one of them."""
    value = _or(_raw(name), default)
    if choices is None:
        return value
    allowed = list(choices)
    value = value.strip().lower()
    if value not in allowed:
        raise invalid(name, value, " or ".join(repr(choice) for choice in allowed))
    return value


def read_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number, `minimum` or more, and `maximum` or less when given."""
    if maximum is None:
        return _read_number(name, default, int, minimum, f"a whole number, {minimum} or more")
    expected = f"a whole number from {minimum} to {maximum}"
    return _read_number(name, default, int, minimum, expected, maximum=maximum)


def read_float(name: str, default: float) -> float:
    """A number of seconds, 0 or more."""
    return _read_number(name, default, float, 0, "a number, 0 or more")


def _read_number(
    name: str,
    default: N,
    convert: Callable[[str], N],
    minimum: int,
    expected: str,
    *,
    maximum: float = float("inf"),
) -> N:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = convert(raw.strip())
    except ValueError:
        raise invalid(name, raw, expected) from None
    if not minimum <= value <= maximum:  # also refuses nan
        raise invalid(name, raw, expected)
    return value


def read_bool(name: str, default: bool) -> bool:
    """true/on/yes/1 or false/off/no/0; anything else is refused, never read as false."""
    raw = _raw(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise invalid(name, raw, "true or false")
    return word in TRUE_WORDS


def read_list(name: str, default: list[str]) -> list[str]:
    """Comma-separated items, each stripped; empty items are dropped."""
    raw = _raw(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def read_matching(name: str, default: str, pattern: str, expected: str) -> str:
    """The stripped variable, which must match `pattern` whole."""
    value = _or(_raw(name), default).strip()
    if not re.fullmatch(pattern, value):
        raise invalid(name, value, expected)
    return value


def read_parsed(name: str, default: str, parser: Callable[[str], T], expected: str) -> T:
    """What `parser` (a pure function that raises ValueError) reads in the variable."""
    value = _or(_raw(name), default)
    try:
        return parser(value)
    except ValueError:
        raise invalid(name, value, expected) from None


def parse_rate(text: str) -> tuple[int, float] | None:
    """`"5/60s"` -> (5, 60.0), `"10/hour"` -> (10, 3600.0): a count per window of seconds, both above 0;
    `"0"` or `""` -> None (no limit). ValueError otherwise."""
    if text.strip() in {"", "0"}:
        return None
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(text)
    count = int(match["count"])
    seconds = float(match["seconds"]) if match["seconds"] else float(_UNIT_SECONDS[match["unit"][0]])
    if count < 1 or not seconds > 0:
        raise ValueError(text)
    return count, seconds


def parse_uid_range(text: str) -> range:
    """`"60000-60999"` -> range(60000, 61000), `"7"` -> range(7, 8): uids above 0. ValueError otherwise."""
    first, sep, last = text.strip().partition("-")
    try:
        low, high = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(text) from None
    if not 0 < low <= high < 2**32 - 1:
        raise ValueError(text)
    return range(low, high + 1)


def each(name: str, values: list[T], accept: Callable[[T], bool], expected: str) -> list[T]:
    """`values` when `accept` takes every one of them."""
    if not all(accept(value) for value in values):
        raise invalid(name, ",".join(map(str, values)), expected)
    return values
