import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "publisher_project.settings.production")

application = get_wsgi_application()

# Imported once Django is set up. Degraded mode: the web process
# starts without a broker and says so once.
from publishing.broker import warn_if_unreachable  # noqa: E402

warn_if_unreachable()
