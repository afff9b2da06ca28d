"""Host policy for the pipeline's outbound connections, credential redaction for its messages,
and how an HTTP answer is read and judged (the store's and a webhook receiver's alike).

`check_host` keeps a job from reaching the worker's own network (loopback, private ranges, cloud
metadata endpoints) unless the operator allowed it: sources and targets are user input. It judges a
URL when it is saved and again before a job uses it; what the connection then reaches is checked
once more where the socket is opened (`outbound_session` for HTTP, `pinned_addresses` for git), so a
name that resolves elsewhere by then (DNS rebinding) or a redirect cannot lead inside.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeAlias
from urllib.parse import SplitResult, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES, InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter

from publishing.exceptions import JobError, PermanentJobError, TransientJobError
from publishing.redaction import redact_credentials

logger = logging.getLogger(__name__)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public_address(address: IPAddress) -> bool:
    """True when `address` is a globally routable unicast address (IPv4-mapped IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 one are judged by it (6to4 2002::/16 and Teredo are global to
        # some Python versions, whatever they lead to; NAT64 64:ff9b::/96 likewise).
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if address in ipaddress.IPv6Network("64:ff9b::/96"):
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and not is_public_address(inner) for inner in embedded):
            return False
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    return not (
        # requests-hardened's list of ranges Python's flags miss (6to4 relays, NAT64, ORCHIDv2, ...).
        any(address in network for network in EXTRA_BLOCKED_NET_RANGES if network.version == address.version)
        or address.is_loopback
        # Deprecated, and still routed inside some networks (fec0::/10).
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
        or address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        # Catches what the flags above miss, such as the shared address space 100.64.0.0/10.
        or not address.is_global
    )


def _parse_address(text: str) -> IPAddress | None:
    """The address `text` spells, or None for a name."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _looks_numeric(host: str) -> bool:
    """True for the legacy IPv4 spellings the resolver accepts (`2130706433`, `0x7f.1`, `127.1`)."""
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True


def has_control_or_space(text: str) -> bool:
    """True when `text` holds white space or a control character (never valid in a URL we pass on)."""
    return any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def split_url(url: str, *, what: str, code: str) -> SplitResult:
    """`urlsplit(url)`; PermanentJobError(code) for an empty URL, bad characters or a malformed port."""
    if not url or has_control_or_space(url):
        raise PermanentJobError(f"{what} is empty or contains forbidden characters", code=code)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise PermanentJobError(f"malformed {what}: {exc}", code=code) from exc
    return parts


def check_host(host: str, *, allow_private: bool, code: str, resolve: bool = True) -> tuple[str, ...]:
    """Raise PermanentJobError(code) for a host on the worker's own network unless `allow_private`.

    Literal addresses are refused when non-public, named hosts when they resolve to any non-public
    address, legacy numeric spellings always. Returns the addresses judged (none when `allow_private`
    or not `resolve`), for a caller to connect to exactly those.
    A name that does not resolve raises TransientJobError("HOST_UNRESOLVABLE") (only when `resolve`).
    """
    if allow_private:
        return ()
    name = host.strip().strip("[]").rstrip(".").lower()
    if not name:
        raise PermanentJobError("the URL has no host", code=code)
    if name == "localhost" or name.endswith(".localhost"):
        raise PermanentJobError(f"host {name!r} is local and not allowed", code=code)
    if not name.isascii():
        # Python's resolver encodes IDNA 2003 and curl IDNA 2008: `faß.de` would be judged as
        # fass.de and fetched from xn--fa-hia.de, past the address pinned for it.
        raise PermanentJobError(
            f"host {name!r} is not ASCII: write an internationalised name in its xn-- form", code=code
        )
    # A zone index (`fe80::1%eth0`) is not part of the address proper.
    literal = _parse_address(name.split("%", 1)[0])
    if literal is not None:
        if not is_public_address(literal):
            raise PermanentJobError(f"host {name!r} is a non-public address and not allowed", code=code)
        return (str(literal),)
    # Legacy spellings (`2130706433`, `0x7f.1`) hide what they point at: refused outright.
    if _looks_numeric(name):
        raise PermanentJobError(f"host {name!r} is a numeric address spelling and not allowed", code=code)
    if not resolve:
        return ()
    return _resolve_public(name, code=code)


def _resolve_public(name: str, *, code: str) -> tuple[str, ...]:
    """The addresses `name` resolves to, each of them public; else PermanentJobError(code)."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise PermanentJobError(f"host {name!r} is not a valid host name", code=code) from exc
    except (socket.gaierror, OSError) as exc:
        raise TransientJobError(
            f"host {name!r} could not be resolved: {exc}", code="HOST_UNRESOLVABLE"
        ) from exc
    addresses: list[str] = []
    for info in infos:
        address = _parse_address(str(info[4][0]).split("%", 1)[0])
        if address is None or not is_public_address(address):
            logger.warning("Refused host %s: it resolves to non-public address %s", name, info[4][0])
            raise PermanentJobError(
                f"host {name!r} resolves to a non-public address ({info[4][0]})", code=code
            )
        if str(address) not in addresses:
            addresses.append(str(address))
    return tuple(addresses)


# --- HTTP connections -----------------------------------------------------------

# Raised where the socket would open, when the address the name resolves to then is not public.
AddressNotAllowed = InvalidIPAddress
# Only the redirects that keep the method and the body: a 301, 302 or 303 turns a POST into a GET,
# which would report an upload that never happened as a success.
FOLLOWED_REDIRECTS = frozenset({307, 308})
MAX_REDIRECTS = 3


class _GuardedSession(HTTPSession):  # type: ignore[misc]  # requests-hardened has no annotations
    def get_redirect_target(self, resp: requests.Response) -> str | None:
        if resp.status_code not in FOLLOWED_REDIRECTS:
            return None
        target: str | None = super().get_redirect_target(resp)
        return target


# The blocks a request body is sent in: urllib3's default 16 KiB cost a read and a send each, thousands
# of them for an archive of tens of MB (about a fifth of a loopback upload's time).
UPLOAD_BLOCK = 1024 * 1024


def _with_large_blocks(adapter: HTTPAdapter) -> HTTPAdapter:
    """`adapter`, its connections sending a body UPLOAD_BLOCK bytes at a time."""
    adapter.poolmanager.connection_pool_kw["blocksize"] = UPLOAD_BLOCK
    return adapter


class _PolicyAdapter(IPFilterAdapter):  # type: ignore[misc]  # requests-hardened has no annotations
    """requests-hardened's resolve-once-and-pin, then this module's address policy on the pinned
    address: the same rule as every other check here (`is_public_address`), where the socket opens."""

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        check_pinned(request.url or "", ipaddress.ip_address(str(host_params["host"]).strip("[]")))
        return host_params, pool_kwargs


def check_pinned(url: str, address: IPAddress) -> None:
    """Raise AddressNotAllowed when the address a connection is about to open is not public."""
    if not is_public_address(address):
        logger.warning("Refused the non-public address %s for %s", address, redact_credentials(url))
        raise AddressNotAllowed(address)


def outbound_session(*, allow_private: bool) -> requests.Session:
    """A session for requests to user-supplied URLs (the store, webhook receivers).

    Unless `allow_private`, every connection (redirects and pool refills included) resolves the host
    once, refuses a non-public address (AddressNotAllowed) and connects to that very address.
    It follows up to MAX_REDIRECTS redirects of FOLLOWED_REDIRECTS, and ignores the worker's proxy
    variables and ~/.netrc: credentials of the worker's own never go to a host a user chose.
    """
    config = Config(
        ip_filter_enable=not allow_private,
        ip_filter_allow_loopback_ips=False,
        never_redirect=False,
        default_timeout=None,
    )
    session: requests.Session = _GuardedSession(config)
    for prefix, https in (("http://", False), ("https://", True)):
        adapter = (
            HTTPAdapter() if allow_private else _PolicyAdapter(is_https_proto=https, allow_loopback=False)
        )
        session.mount(prefix, _with_large_blocks(adapter))
    session.max_redirects = MAX_REDIRECTS
    session.trust_env = False
    return session


# --- HTTP answers -------------------------------------------------------------

# Worth another try later, with every 5xx; any other status fails at once.
TRANSIENT_STATUSES = frozenset({408, 429})
EXCERPT_CHARS = 200


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or 500 <= status < 600


def read_capped(response: requests.Response, limit: int) -> bytes:
    """At most `limit` bytes of a streamed answer's body: enough to say why, never a flood."""
    body = bytearray()
    for chunk in response.iter_content(chunk_size=8192):
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


def excerpt(body: bytes) -> str:
    """The start of a body on one line, for an error message."""
    return " ".join(body.decode("utf-8", errors="replace").split())[:EXCERPT_CHARS]


@dataclass(frozen=True)
class Answer:
    """What a user-supplied URL answered: status, headers, the URL that answered (after any redirect)
    and the start of the body."""

    status: int
    headers: Mapping[str, str]
    url: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def post(
    url: str,
    *,
    data: bytes | IO[bytes],
    headers: Mapping[str, str],
    timeout: int,
    allow_private: bool,
    read_limit: int,
    label: str,
    code_prefix: str,
    read_success: bool = True,
) -> Answer:
    """POST to a user-supplied URL through `outbound_session`; the answer, whatever its status.

    Raises `<code_prefix>_NOT_ALLOWED` (permanent; nothing was sent), `_UNAVAILABLE` (transient:
    no connection, a timeout, a cut-off answer) or `_REJECTED` (permanent), `label` naming the URL
    in the detail. The body is read capped (a success's only if `read_success`), never slurped.
    """
    try:
        with (
            outbound_session(allow_private=allow_private) as session,
            session.post(
                url, data=data, headers=dict(headers), timeout=(min(timeout, 10), timeout), stream=True
            ) as response,
        ):
            status = response.status_code
            read = read_success or not 200 <= status < 300
            body = read_capped(response, read_limit) if read else b""
            return Answer(status=status, headers=response.headers, url=response.url, body=body)
    except AddressNotAllowed as exc:
        raise PermanentJobError(
            f"{label} led to a non-public address ({exc}) and was not contacted",
            code=f"{code_prefix}_NOT_ALLOWED",
        ) from exc
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        detail = f"{label} unreachable: {redact_credentials(str(exc))}"
        raise TransientJobError(detail, code=f"{code_prefix}_UNAVAILABLE") from exc
    except requests.RequestException as exc:
        detail = f"request to {label} failed: {redact_credentials(str(exc))}"
        raise PermanentJobError(detail, code=f"{code_prefix}_REJECTED") from exc


def answer_error(answer: Answer, *, label: str, code_prefix: str) -> JobError | None:
    """None for a 2xx; else `<code_prefix>_UNAVAILABLE` (transient status) or `_REJECTED`, any other 3xx
    (307 and 308 were followed) included, with the start of the body."""
    if answer.ok:
        return None
    start = excerpt(answer.body)
    detail = f"{label} answered {answer.status}" + (f": {start}" if start else "")
    if is_transient_status(answer.status):
        return TransientJobError(detail, code=f"{code_prefix}_UNAVAILABLE")
    return PermanentJobError(detail, code=f"{code_prefix}_REJECTED")
