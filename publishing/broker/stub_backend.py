"""Publisher's operations on Dramatiq's stub broker (`stub://`): the unit tests' broker, in memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

from publishing.broker.operations import BrokerOperations, DeadLetter, DeadLetterSweep, QueueStats


class StubOperations(BrokerOperations):
    kind = "stub"
    schemes = frozenset({"stub"})
    broker_type = StubBroker
    in_memory = True
    broker: StubBroker

    @staticmethod
    def make(
        url: str,
        *,
        middleware: Sequence[Middleware],
        namespace: str,
        socket_timeout: float,
        heartbeat_timeout: int,
    ) -> dramatiq.Broker:
        return StubBroker(middleware=list(middleware))

    def ping(self) -> None:
        return  # in this process: always there

    def queue_stats(self, queue: str) -> QueueStats | None:
        return None

    def live_message_ids(self, queue: str) -> set[str] | None:
        return None

    def sweep_dead_letters(
        self, queue: str, remove: Callable[[DeadLetter], bool], *, limit: int
    ) -> DeadLetterSweep:
        letters = self.broker.dead_letters_by_queue.get(queue, [])
        seen = removed = 0
        with self.reaching(fail_fast=True):
            for proxy in list(letters)[:limit]:
                seen += 1
                if remove(dramatiq.Message.decode(proxy.encode())):
                    letters.remove(proxy)
                    removed += 1
        return DeadLetterSweep(seen=seen, removed=removed)

    def trim_dead_letters(self, queue: str, *, keep: int) -> int:
        return 0
