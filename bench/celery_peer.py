"""The Celery peers' app (peer_celery, peer_celery_pickup), apart: their workers import only this."""

from __future__ import annotations

from celery import Celery


def celery_app(name: str, redis_url: str, namespace: str, queue: str) -> Celery:
    """Redis under a key prefix of the run's, acks late as Dramatiq acks, no result backend."""
    app = Celery(name, broker=redis_url)
    app.conf.update(
        broker_transport_options={"global_keyprefix": f"{namespace}:"},
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_acks_late=True,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )
    return app
