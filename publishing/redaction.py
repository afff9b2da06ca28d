"""Credentials never shown: URLs with their user-info as `***`, in one URL, in any text, and back.

A URL a user writes may carry a token or a password (`https://token@git.example.com/...`): the API,
the admin, the logs and the publishing's own log show it as `https://***@git.example.com/...`, and a
URL sent back as shown keeps the stored secret (`restore_credentials`).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

# `scheme://user:password@host` -> `scheme://***@host`; a bare token as user name is a secret too.
# Up to the last `@` before the path, query or fragment: a password may hold a raw `@`, and an `@`
# in the query (`?email=a@b.org`) is no user info.
_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]+@")


def redact_credentials(text: str) -> str:
    """`text` with the user-info part of every URL in it replaced by `***`."""
    return _USERINFO_RE.sub(r"\g<scheme>***@", text)


REDACTED = "***"


# Query parameters that carry credentials: redis-py reads `?password=` and `?username=` as such.
_SECRET_PARAMETERS = frozenset({"password", "username"})


def redacted_url(url: str) -> str:
    """`url` with its user-info shown as `***`, up to the last `@` of the authority as URL parsers read it,
    and the values of its `password` and `username` query parameters as `***`; the rest as written.

    Stricter than `redact_credentials` for one whole URL: a password with a raw `@` is hidden whole.
    """
    return _redacted_query(_redacted_userinfo(url))


def _redacted_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_credentials(url)
    if "@" not in parts.netloc:
        return redact_credentials(url)
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@" + parts.netloc.rsplit("@", 1)[1]))


def _redacted_query(url: str) -> str:
    # Cut as urlsplit cuts (the fragment first), on the text: a URL without `//` keeps its form.
    base, hash_mark, fragment = url.partition("#")
    head, question_mark, query = base.partition("?")
    if not question_mark:
        return url
    shown = "&".join(_shown_parameter(pair) for pair in query.split("&"))
    return f"{head}?{shown}{hash_mark}{fragment}"


def _shown_parameter(pair: str) -> str:
    name = pair.partition("=")[0]
    return f"{name}={REDACTED}" if unquote_plus(name).lower() in _SECRET_PARAMETERS else pair


def restore_credentials(submitted: str, stored: str) -> str:
    """`submitted`, with the stored URL's credentials where it shows them as `***` (as they are read back).

    So a URL edited as it was shown keeps its secret. It comes back only to the same scheme, host
    and port: sent with `***` anywhere else, the secret would follow the URL there. ValueError then,
    and when nothing is stored to restore.
    """
    try:
        new, old = urlsplit(submitted), urlsplit(stored)
    except ValueError:
        return submitted
    userinfo, _, place = new.netloc.rpartition("@")
    if userinfo != REDACTED:
        return submitted
    stored_userinfo, _, stored_place = old.netloc.rpartition("@")
    if not stored_userinfo:
        raise ValueError(f"{REDACTED} stands for stored credentials, and there are none: type them.")
    if (new.scheme.lower(), place.lower()) != (old.scheme.lower(), stored_place.lower()):
        raise ValueError(
            f"{REDACTED} keeps the stored credentials for {redacted_url(stored)} only; "
            "type them again for another scheme, host or port."
        )
    return urlunsplit(new._replace(netloc=f"{stored_userinfo}@{place}"))
