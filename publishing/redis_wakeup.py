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

Both classes mirror parts of the installed Dramatiq's Redis broker. Each names what it mirrors in
`MIRRORS`, with a digest of that upstream source (`mirrored_source_digest`);
tests/unit/test_redis_wakeup_mirror.py fails when the installed Dramatiq's differs. Then re-read the
upstream code, bring the mirror here in line with it, and record the new digest.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import inspect
import logging
import threading
import time
from typing import Any, ClassVar

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed, DecodeError

logger = logging.getLogger(__name__)

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


def mirrored_source_digest(name: str) -> str:
    """The digest of an upstream source named in a MIRRORS: a dotted function path, or a package file."""
    if "/" in name:
        package, _, path = name.partition("/")
        source = importlib.resources.files(package).joinpath(path).read_bytes()
    else:
        module_name, *attributes = name.split(".")
        found: Any = importlib.import_module(module_name)
        for attribute in attributes:
            try:
                found = getattr(found, attribute)
            except AttributeError:
                found = importlib.import_module(f"{found.__name__}.{attribute}")
        source = inspect.getsource(found).encode()
    return hashlib.sha256(source).hexdigest()[:16]


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

    # __next__ is upstream's but for the wait and the undecodable body; __init__ sets the attributes it
    # uses; the dispatch script names the acks and bodies keys _dead_letter_undecodable reads.
    MIRRORS: ClassVar[dict[str, str]] = {
        "dramatiq.brokers.redis._RedisConsumer.__init__": "c626986d71660eb6",
        "dramatiq.brokers.redis._RedisConsumer.__next__": "b8245bc4ab8044d6",
        "dramatiq/brokers/redis/dispatch.lua": "ba4d872e4fb204eb",
    }

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

    # requeue_from_dead_workers builds the dispatch script's arguments as _dispatch does, and relies on
    # the script running its maintenance for a read-only command.
    MIRRORS: ClassVar[dict[str, str]] = {
        "dramatiq.brokers.redis.RedisBroker._dispatch": "ee77793d07f17bbe",
        "dramatiq/brokers/redis/dispatch.lua": "ba4d872e4fb204eb",
    }

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
