"""Dramatiq's Redis broker, with idle consumers woken by each enqueue instead of waiting for their next poll.

Dramatiq's Redis consumers poll: idle, they sleep up to the worker timeout
between fetches, so a job sent to an idle system waits for the next poll.
Here every enqueue also PUBLISHes the queue's name, and one thread per worker
process wakes that queue's consumer at once. Only the wake-up travels by
pub/sub, never a message: messages are still fetched by Dramatiq's own
script, so delivery stays at-least-once, and while pub/sub is away the
consumers simply poll as before.

The consumer also dead-letters a message body that does not decode: Dramatiq's
own lets the DecodeError restart the consumer, which loses the messages it had
fetched along with it (they wait in its acks until the worker process dies).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed, DecodeError

logger = logging.getLogger(__name__)

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


class _Wakeups:
    """One listener per worker process: "a message was enqueued on queue X" sets X's event."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._started = False

    def event_for(self, queue_name: str) -> threading.Event:
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._listen_forever, name="publishing-wakeups", daemon=True).start()
            return self._events.setdefault(queue_name, threading.Event())

    def _listen_forever(self) -> None:
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._wake(message["data"])
            except REDIS_ERRORS as exc:
                logger.debug("wake-up listener lost Redis (%s); consumers poll meanwhile", exc)
                time.sleep(1)

    def _wake(self, data: bytes | str) -> None:
        queue_name = data.decode() if isinstance(data, bytes) else str(data)
        with self._lock:
            event = self._events.get(queue_name)
        if event is not None:
            event.set()


class _WakeableConsumer(_RedisConsumer):
    """Dramatiq 2.2's Redis consumer, waiting on a wake-up event where it would sleep."""

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wakeup = broker.wakeups.event_for(queue_name)

    def __next__(self) -> MessageProxy | None:
        # The same as _RedisConsumer.__next__ but for the wait on a miss.
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue  # dramatiq #266: never seen here, kept as Dramatiq does
                    self.misses = 0
                    try:
                        message = dramatiq.Message.decode(data)
                    except DecodeError as exc:
                        self._dead_letter_undecodable(data, exc)
                        continue
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                # Cleared before the fetch: a wake-up that comes during it is kept.
                self.wakeup.clear()
                messages = []
                if self.outstanding_message_count < self.prefetch:
                    self.message_cache = messages = self.broker.do_fetch(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                if not messages:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    self.wakeup.wait(backoff_ms / 1000)
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _dead_letter_undecodable(self, data: bytes, error: DecodeError) -> None:
        """Move a fetched body that is no message to the dead letters, found by its content.

        Only the body came back from the fetch; its id is among this consumer's unacknowledged ones.
        """
        broker = self.broker
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{self.queue_name}"
        bodies = f"{broker.namespace}:{self.queue_name}.msgs"
        for redis_message_id in broker.client.smembers(acks):
            if broker.client.hget(bodies, redis_message_id) == data:
                broker.do_nack(self.queue_name, redis_message_id)
                logger.error(
                    "undecodable message %s on %s dead-lettered without running: %s",
                    redis_message_id.decode(errors="replace"),
                    self.queue_name,
                    str(error)[:200],
                )
                return
        logger.error("undecodable message on %s skipped (no longer in its acks): %s", self.queue_name, error)


class WakingRedisBroker(RedisBroker):
    """Dramatiq's Redis broker whose idle consumers are woken by each enqueue instead of waiting to poll."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wake_channel = f"{self.namespace}:wakeups"
        self.wakeups = _Wakeups(self.client, self.wake_channel)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakeableConsumer

    def requeue_from_dead_workers(self, queue_name: str) -> None:
        """Run Dramatiq's maintenance on `queue_name` now: messages fetched by workers whose heartbeat
        stopped (SIGKILLed, host lost) go back to the queue, and expired dead letters go.

        Dramatiq runs it on a random 0.1% of its commands, which on a quiet system can take many
        minutes; until then those messages are neither ready nor running. Its read-only `qsize`
        command carries the maintenance here.
        """
        args = [
            "qsize",
            current_millis(),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            "1",
            self._max_unpack_size(),
        ]
        self.scripts["dispatch"](args=args, keys=[self.namespace])

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        message = super().enqueue(message, delay=delay)
        try:
            self.client.publish(self.wake_channel, message.queue_name)
        except REDIS_ERRORS as exc:
            # The message is in Redis: a lost wake-up only means the next poll finds it.
            logger.debug("could not announce message %s (%s)", message.message_id, exc)
        return message
