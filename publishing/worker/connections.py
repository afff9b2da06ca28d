"""The worker's broker connections: patient where the web tier's fail fast."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import Middleware

from publishing.broker import operations_for


class WorkerConnections(Middleware):
    """In worker processes, trade the web tier's fail-fast broker connections for patient ones.

    The web tier must answer within a second, so its client gives up after one
    short timeout. A worker must not: a lost enqueue of a retry or a lost ack
    during a brief Redis stall strands a publishing. Before the worker boots,
    its backend adjusts the broker's connections (`BrokerOperations.prepare_worker`).
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        operations_for(broker).prepare_worker()
