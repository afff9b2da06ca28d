"""One circuit breaker for each dependency a request must never hang on: the broker, the throttle's cache.

After a failure the circuit opens: callers fail fast, without touching the dependency, until a
cool-down passes. Then it is half-open: one caller probes while the others keep failing fast, and the
probe's success closes the circuit (its failure opens it for another cool-down). So a dependency that
refuses costs one fast failure, one that hangs costs one timeout per cool-down, and recovery needs no
restart. One breaker per dependency per process.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from publishing.redaction import redact_credentials

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CircuitOpen(Exception):
    """What a breaker raises by default instead of calling its dependency."""


class CircuitBreaker:
    """Fail fast while a dependency is known to be down; let one caller probe it now and then.

    `errors` are the exceptions that say the dependency is away (others pass through untouched and
    leave the circuit as it is); `unavailable` builds what callers get instead. An outage logs one
    WARNING when it starts and, while it lasts, at most one more per `warning_interval` seconds; its
    other failures log at DEBUG, and its end at INFO.
    """

    def __init__(
        self,
        *,
        name: str,
        cooldown: float,
        errors: tuple[type[BaseException], ...] = (Exception,),
        unavailable: Callable[[], Exception] = CircuitOpen,
        consequence: str = "failing fast",
        warning_interval: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.cooldown = cooldown
        self.errors = errors
        self.unavailable = unavailable
        self.consequence = consequence
        self.warning_interval = warning_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._probing = False
        self._last_warning = -math.inf
        self.failures = 0

    @property
    def is_open(self) -> bool:
        """True during the cool-down after a failure (not while half-open)."""
        return self.failures > 0 and self._clock() < self._open_until

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn`, or raise `unavailable()` without running it while the circuit is open.

        One of `errors` from `fn` opens the circuit and becomes `unavailable()` too.
        """
        probe = False
        with self._lock:
            if self.failures:
                if self._clock() < self._open_until or self._probing:
                    raise self.unavailable()
                self._probing = probe = True
        try:
            result = fn()
        except self.errors as exc:
            self.failed(exc)
            raise self.unavailable() from exc
        finally:
            if probe:
                with self._lock:
                    self._probing = False
        self.succeeded()
        return result

    def failed(self, exc: BaseException) -> None:
        """Open the circuit for a cool-down: the dependency just failed (`call` says so; so may others)."""
        now = self._clock()
        with self._lock:
            self.failures += 1
            self._open_until = now + self.cooldown
            warn = self.failures == 1 or now - self._last_warning >= self.warning_interval
            if warn:
                self._last_warning = now
        (logger.warning if warn else logger.debug)(
            "%s unavailable (%s: %s); %s for %.1f s",
            self.name,
            type(exc).__name__,
            redact_credentials(str(exc)),
            self.consequence,
            self.cooldown,
        )

    def succeeded(self) -> None:
        """Close the circuit: the dependency answered."""
        with self._lock:
            failures, self.failures = self.failures, 0
        if failures:
            logger.info("%s reachable again after %d failed call(s)", self.name, failures)

    def reset(self) -> None:
        """Closed, with no history (tests, and a process that knows better)."""
        with self._lock:
            self.failures = 0
            self._probing = False
            self._open_until = 0.0
            self._last_warning = -math.inf
