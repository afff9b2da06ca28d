"""Settings shared by every environment, gathered from one module per concern.

Only the concern modules read the environment, each value through `validation`, which refuses a bad
one at import naming the variable. local.py, test.py and production.py override what they need.
"""

from __future__ import annotations

import django_stubs_ext

from .api import *  # noqa: F403
from .broker import *  # noqa: F403
from .builds import *  # noqa: F403
from .core import *  # noqa: F403
from .jobs import *  # noqa: F403
from .stores import *  # noqa: F403
from .webhooks import *  # noqa: F403

django_stubs_ext.monkeypatch()
