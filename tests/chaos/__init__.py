"""The chaos suite: publishings under fire (killed and stopped workers, restarted Redis and PostgreSQL).

`python -m tests.chaos` (`make chaos`) runs the long rounds and writes
docs/reliability.md; tests/integration/test_chaos.py runs a short round.
"""
