"""bench.settings without Publisher's task rows (publishing.task_rows): what they cost (`bench.overhead`).

Informative only: Publisher ships with them (django-dramatiq's task rows are
its job-level records). Everything else, the other middleware included, is as
in bench.settings.
"""

from bench.settings import *  # noqa: F403
from bench.settings import DRAMATIQ_BROKER

TASK_ROWS = "publishing.task_rows.TaskRows"

DRAMATIQ_BROKER = {
    **DRAMATIQ_BROKER,
    "MIDDLEWARE": [path for path in DRAMATIQ_BROKER["MIDDLEWARE"] if path != TASK_ROWS],
}
