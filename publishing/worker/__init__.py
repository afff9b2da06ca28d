"""The worker's Dramatiq middleware, one concern per module, each a hook around the actors.

- `validation`: a message its actor cannot take is dead-lettered before it runs (every actor).
- `connections`: worker processes trade the web tier's fail-fast broker connections for patient ones.
- `abort`: cancellation (dramatiq-abort), for actors that do not declare `abortable=False`.
- `rate_limit`: the global limit on starts of the actors declared `rate_limited=True`.
- `leases`: the running jobs of actors declared `leased=True`, their heartbeats and the worker's presence.
- `reconciler`: the periodic reconcile / prune / sweep pass.
- `shutdown`: the deadline that requeues and interrupts what still runs at shutdown.

The classes take their intervals, rates and timeouts as constructor arguments; `from_settings` builds
them from the Django settings, and DRAMATIQ_BROKER["MIDDLEWARE"] names its functions. Dramatiq's
Prometheus middleware with ours is `publishing.metrics.WorkerMetrics`, beside the metrics it serves.
Module imports stay light: django-dramatiq builds these while Django's apps load, before the models.
"""
