"""Production: refuses to start without a SECRET_KEY; passes `check --deploy`."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import (
    METRICS_ALLOW_ANONYMOUS,
    METRICS_TOKEN,
    PUBLISHING_BUILD_SANDBOX,
    SECRET_KEY,
    SECURE_SSL_REDIRECT_IN_PRODUCTION,
)
from .validation import invalid

if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set in production.")
if not METRICS_TOKEN and not METRICS_ALLOW_ANONYMOUS:
    # /metrics shows the queue, the workers and the publishings' counts: by default only to a bearer.
    raise ImproperlyConfigured(
        "METRICS_TOKEN must be set in production (Prometheus sends it as `Authorization: Bearer ...`), "
        "or METRICS_ALLOW_ANONYMOUS=true where only trusted clients reach /metrics."
    )
if PUBLISHING_BUILD_SANDBOX not in ("", "required"):
    # Users' build commands are untrusted code: outside the sandbox they read the database.
    raise invalid("PUBLISHING_BUILD_SANDBOX", PUBLISHING_BUILD_SANDBOX, "required (or empty) in production")

PRODUCTION = True
DEBUG = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = SECURE_SSL_REDIRECT_IN_PRODUCTION
# Prometheus scrapes the web tier over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"

# Hashed, compressed static files (`collectstatic` runs in the image build).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
