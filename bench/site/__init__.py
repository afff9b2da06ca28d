"""A Django app that only benchmarks install (DJANGO_SETTINGS_MODULE=bench.settings).

It adds to Publisher what its peers are measured with and nothing else: a
no-op actor on Publisher's broker and middleware (`tasks.noop`), and an
insert-only endpoint, the baseline of the initiate benchmark (`views`).
"""
