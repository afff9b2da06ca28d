"""Every write to projects, publishings and their jobs, one module a concern.

- `projects`: validate, create, update and delete a project.
- `publishings`: what a user does to publishings: initiate, cancel, retry.
- `queueing`: a publishing's row moves to queued with a new message, then the message is sent.
- `runner`: one attempt of the pipeline, called by the actor.
- `attempts`: an attempt's record and log.
- `maintenance`: what the workers do around the jobs: deferrals, leases, requeues, reconciliation,
  sweeps, pruning.
- `dead_letters`: what each dead-lettered job still needs.
- `webhooks`: what a webhook sends, its deliveries, their resends and reconciliation.

The API, the admin, the commands, the actors and the worker middleware call these; nothing here
answers HTTP or reads a request.
"""
