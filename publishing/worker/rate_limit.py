"""The global rate limit on publishing starts, enforced before the actor runs, without using up retries."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage

from publishing import metrics
from publishing.broker import BROKER_ERRORS
from publishing.rate_limit import Rate, WindowLimiter
from publishing.worker.messages import actor_option, owner, publishing_id

logger = logging.getLogger(__name__)


class RateLimitDeferralFailed(MiddlewareError):
    """Over the limit, and the broker would not take the message back."""


class RateLimit(Middleware):
    """At most N starts per rolling window of the actors declared `rate_limited=True`, across all workers.

    Dramatiq's rate limiters raise inside the actor, which the Retries
    middleware counts as a failure (dramatiq #257, #32). Here the check runs
    before the actor: a message over the limit is put back with a delay (same
    message id, retry count untouched), the publishing's `not_before` says
    when, and the message in hand is skipped. No worker thread waits. With a
    fair limiter a free slot goes to the waiting project owner with the fewest
    starts in the window (publishing.rate_limit).
    """

    def __init__(
        self,
        *,
        rate: Rate | None,
        make_limiter: Callable[[], WindowLimiter | None] | None,
        jitter_ms: int = 250,
        unavailable_delay_ms: int = 5_000,
    ) -> None:
        """`make_limiter` builds the limiter on first use (None: nothing is limited, as with no `rate`)."""
        self.rate = rate
        self._make_limiter = make_limiter
        self._limiter: WindowLimiter | None = None
        # Spreads deferred messages so they do not all wake for the same slot.
        self.jitter_ms = jitter_ms
        # Without Redis nothing can be counted: try again later rather than overrun.
        self.unavailable_delay_ms = unavailable_delay_ms
        # Messages this middleware skips (deferred); any other skip is a message that is not coming back.
        self._deferring: set[str] = set()

    @property
    def actor_options(self) -> set[str]:
        return {"rate_limited"}

    def _get_limiter(self) -> WindowLimiter | None:
        if self.rate is None or self._make_limiter is None:
            return None
        if self._limiter is None:
            self._limiter = self._make_limiter()
        return self._limiter

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if not actor_option(broker, message, "rate_limited", False):
            return
        limiter = self._get_limiter()
        if limiter is None:
            return
        jitter = random.randint(0, self.jitter_ms)  # noqa: S311 - spreading, not security
        for_another_owner = False
        try:
            verdict = limiter.acquire(message.message_id, owner=owner(message), jitter_ms=jitter)
        except BROKER_ERRORS as exc:
            logger.warning("rate limiter unavailable (%s); deferring message %s", exc, message.message_id)
            delay = self.unavailable_delay_ms + jitter
        else:
            if verdict.taken:
                return
            delay, for_another_owner = verdict.wait_ms, verdict.for_another_owner
        self._defer(broker, message, delay)
        logger.info(
            "rate limit %s reached: publishing %s deferred by %.1fs (no retry used)%s",
            self.rate,
            publishing_id(message),
            delay / 1000,
            "; a free slot is kept for an owner with fewer starts" if for_another_owner else "",
        )
        self._deferring.add(message.message_id)
        raise SkipMessage()

    def _defer(self, broker: dramatiq.Broker, message: MessageProxy, delay: int) -> None:
        """Put the message back `delay` ms later and say so on its publishing; else hand it over."""
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance

        try:
            self._put_back(broker, message, delay)
        except RateLimitDeferralFailed:
            # Raised on, it went to Retries, whose enqueue fails the same way: the worker then acks
            # the message and nothing holds it any more, while its publishing stays queued for it (on
            # RabbitMQ and the stub broker for good: the reconciler cannot see which messages exist).
            # Told that its message is gone, the reconciler sends a new one at its next pass.
            self._release(message)
            raise SkipMessage() from None
        metrics.rate_limit_deferred(delay / 1000)
        try:
            maintenance.publishing_defer(publishing_id=publishing_id(message), delay_ms=delay)
        except Exception as exc:
            # The deferral itself holds (the message is back with its delay); only the page's "not
            # before" is missing, until the message runs.
            logger.warning(
                "could not record not_before for message %s: %s: %s",
                message.message_id,
                type(exc).__name__,
                exc,
            )

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if message.message_id in self._deferring:
            self._deferring.discard(message.message_id)
            return
        if not actor_option(broker, message, "rate_limited", False) or message.failed:
            return  # an invalid message (failed) never reached the window
        limiter = self._get_limiter()
        if limiter is None or not limiter.fair:
            return
        # Skipped by another middleware (cancelled): a slot kept for it would idle until its wait expires.
        try:
            limiter.withdraw(message.message_id, owner=owner(message))
        except BROKER_ERRORS as exc:
            logger.warning("could not withdraw message %s from the rate limit (%s)", message.message_id, exc)

    @staticmethod
    def _release(message: MessageProxy) -> None:
        """Hand a message that could not be put back over to the reconciler; else RateLimitDeferralFailed."""
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance

        publishing = publishing_id(message)
        try:
            maintenance.publishing_message_lost(publishing_id=publishing, message_id=message.message_id)
        except Exception as exc:
            # The database is away too: Retries is the last resort (a retry used, if its enqueue works).
            logger.warning("could not hand message %s over to the reconciler (%s)", message.message_id, exc)
            raise RateLimitDeferralFailed(f"message {message.message_id} could not be deferred") from exc
        logger.warning(
            "message %s could not be deferred; publishing %s waits for the reconciler to send a new one",
            message.message_id,
            publishing,
        )

    def _put_back(self, broker: dramatiq.Broker, message: MessageProxy, delay: int) -> None:
        """Enqueue the same message again, delayed; never run it over the limit, never drop it."""
        for attempt in range(3):
            try:
                broker.enqueue(message.copy(), delay=delay)
                return
            except Exception as exc:
                logger.warning("could not defer message %s (%s); trying again", message.message_id, exc)
                time.sleep(attempt + 1)
        raise RateLimitDeferralFailed(f"message {message.message_id} could not be deferred")
