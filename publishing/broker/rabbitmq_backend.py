"""Publisher's operations on Dramatiq's RabbitMQ broker (`amqp://`, `amqps://`).

Dramatiq declares a queue `q` with its delay queue `q.DQ` and its dead-letter queue `q.XQ`. A
queue's messages cannot be listed without taking them, so this backend cannot tell which messages it
holds, nor count the delayed ones that workers hold until their time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import dramatiq.errors
import pika
from django.conf import settings
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

from publishing.broker.operations import BrokerOperations, DeadLetter, DeadLetterSweep, QueueStats

T = TypeVar("T")


def amqp_url(url: str, *, socket_timeout: float) -> str:
    """`url` with short timeouts, one connection attempt and a short heartbeat, unless it sets them."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(socket_timeout))
    query.setdefault("stack_timeout", str(max(socket_timeout * 2, 1)))
    query.setdefault("blocked_connection_timeout", str(max(socket_timeout * 2, 1)))
    query.setdefault("connection_attempts", "1")
    # A hung broker never confirms a publish and pika has no timeout for that
    # wait: a short heartbeat turns it into a connection error within seconds.
    query.setdefault("heartbeat", "5")
    return urlunsplit(parts._replace(query=urlencode(query)))


@functools.cache
def _publishers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="publishing-publish")


def _bounded(fn: Callable[[], T]) -> T:
    """Run a RabbitMQ publish with a hard deadline.

    pika has no timeout for a publish confirmation: on a hung RabbitMQ a warm
    connection waits for its heartbeat to fail, about 20 s. The publish runs on
    a thread of its own instead, and the caller gives up after the deadline
    (TimeoutError, a broker error). A publish that lands later anyway is
    harmless: its publishing was deleted or stays queued, and the worker or the
    reconciler sorts it out.
    """
    deadline = max(4 * settings.PUBLISHING_BROKER_SOCKET_TIMEOUT, 2.0)
    return _publishers().submit(fn).result(timeout=deadline)


class RabbitmqOperations(BrokerOperations):
    kind = "rabbitmq"
    schemes = frozenset({"amqp", "amqps"})
    broker_type = RabbitmqBroker
    broker: RabbitmqBroker

    @staticmethod
    def make(
        url: str,
        *,
        middleware: Sequence[Middleware],
        namespace: str,
        socket_timeout: float,
        heartbeat_timeout: int,
    ) -> dramatiq.Broker:
        return RabbitmqBroker(
            url=amqp_url(url, socket_timeout=socket_timeout),
            middleware=list(middleware),
            confirm_delivery=True,
        )

    def send(self, message: dramatiq.Message[Any], *, delay: int | None) -> dramatiq.Message[Any]:
        return _bounded(lambda: self.broker.enqueue(message, delay=delay))

    def ping(self) -> None:
        self._connect().close()

    def queue_stats(self, queue: str) -> QueueStats | None:
        with self.reaching(fail_fast=True):
            # A passive declare counts ready messages only: the delayed ones that
            # workers hold until their time (most of them) would be missing.
            ready, dead = self._ready_counts([queue, f"{queue}.XQ"])
        return QueueStats(name=queue, ready=ready, delayed=None, dead=dead)

    def live_message_ids(self, queue: str) -> set[str] | None:
        return None

    def sweep_dead_letters(
        self, queue: str, remove: Callable[[DeadLetter], bool], *, limit: int
    ) -> DeadLetterSweep:
        with self.reaching(fail_fast=True):
            connection = self._connect()
            try:
                return self._sweep(connection.channel(), queue, remove, limit)
            finally:
                # Whatever is still unacknowledged (the pass ended early) goes back to the queue.
                connection.close()

    def trim_dead_letters(self, queue: str, *, keep: int) -> int:
        return 0  # the dead-letter queue's own message TTL (Dramatiq's, 7 days) expires them

    def _connect(self) -> pika.BlockingConnection:
        """A connection of its own, with the broker's parameters (its timeouts)."""
        return pika.BlockingConnection(self.broker.parameters)

    @staticmethod
    def _sweep(channel: Any, queue: str, remove: Callable[[DeadLetter], bool], limit: int) -> DeadLetterSweep:
        try:
            channel.queue_declare(f"{queue}.XQ", passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return DeadLetterSweep(seen=0, removed=0)  # 404: nothing was ever dead-lettered
        seen = removed = 0
        kept: list[int] = []
        # Messages taken and not yet acknowledged are not handed out again on
        # this channel, so the loop ends when every one has been seen once.
        while seen < limit:
            method, _properties, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
            if method is None:
                break
            try:
                message = dramatiq.Message.decode(body)
            except dramatiq.errors.DecodeError:
                kept.append(method.delivery_tag)
                continue
            seen += 1
            if remove(message):
                channel.basic_ack(method.delivery_tag)
                removed += 1
            else:
                kept.append(method.delivery_tag)
        for tag in kept:
            channel.basic_nack(tag, requeue=True)
        return DeadLetterSweep(seen=seen, removed=removed)

    def _ready_counts(self, queues: list[str]) -> list[int]:
        """Ready messages of each queue (0 for one not declared yet)."""
        connection = self._connect()
        try:
            counts = []
            channel = connection.channel()
            for queue in queues:
                try:
                    counts.append(channel.queue_declare(queue, passive=True).method.message_count)
                except pika.exceptions.ChannelClosedByBroker:
                    counts.append(0)  # 404: no worker has declared it yet
                    channel = connection.channel()
            return counts
        finally:
            connection.close()
