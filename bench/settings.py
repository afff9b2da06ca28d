"""Publisher's production settings plus the bench app (`bench.site`); only benchmarks use them."""

from publisher_project.settings.production import *  # noqa: F403
from publisher_project.settings.production import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.site"]
ROOT_URLCONF = "bench.site.urls"
