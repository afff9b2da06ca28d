"""Host policy: what check_host refuses, resolves and lets through."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline import network
from publishing.pipeline.network import check_host, is_public_address
from publishing.redaction import redact_credentials
from tests.fakes import resolver


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST.",
        "api.localhost",
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
        "2130706433",
        "0x7f.1",
    ],
)
def test_check_host_refuses_local_names_and_non_public_literals_without_resolving(monkeypatch, host):
    # Given a resolver that must not be consulted
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        check_host(host, allow_private=False, code="SOME_CODE", resolve=False)
    assert excinfo.value.code == "SOME_CODE"


def test_check_host_accepts_a_public_literal_address_without_resolving(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)
    assert check_host("93.184.216.34", allow_private=False, code="SOME_CODE") == ("93.184.216.34",)
    assert check_host("[2606:2800:220:1::1]", allow_private=False, code="SOME_CODE") == (
        "2606:2800:220:1::1",
    )


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",  # noqa: S104 -- an address to refuse, not to bind
        "224.0.0.1",
    ],
)
def test_check_host_refuses_a_name_resolving_to_a_non_public_address(monkeypatch, address):
    # Given a name that resolves to a public and a non-public address
    monkeypatch.setattr(socket, "getaddrinfo", resolver("93.184.216.34", address))

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        check_host("internal.example.com", allow_private=False, code="TARGET_NOT_ALLOWED")
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"


def test_check_host_accepts_a_name_resolving_to_public_addresses(monkeypatch):
    # Given a name with only public addresses, one of them listed twice
    monkeypatch.setattr(
        socket, "getaddrinfo", resolver("93.184.216.34", "2606:2800:220:1::1", "93.184.216.34")
    )

    # When it is checked
    accepted = check_host("example.com", allow_private=False, code="TARGET_NOT_ALLOWED")

    # Then no error is raised, and the addresses to connect to are exactly those, once each
    assert accepted == ("93.184.216.34", "2606:2800:220:1::1")


def test_check_host_does_not_resolve_when_resolve_is_false(monkeypatch):
    # Given a resolver that must not be consulted
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)

    # When / Then a plain name passes, with no address judged
    assert check_host("example.com", allow_private=False, code="X", resolve=False) == ()


def test_check_host_reports_an_unresolvable_name_as_transient(monkeypatch):
    # Given a resolver that fails
    def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    # When / Then
    with pytest.raises(TransientJobError) as excinfo:
        check_host("example.com", allow_private=False, code="X")
    assert excinfo.value.code == "HOST_UNRESOLVABLE"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "10.0.0.1", "internal.example.com"])
def test_check_host_allows_everything_when_private_hosts_are_allowed(monkeypatch, host):
    # Given a resolver that must not be consulted
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)

    # When / Then no error is raised, and no address was judged
    assert check_host(host, allow_private=True, code="X") == ()


def test_redact_credentials_hides_user_info_of_every_url():
    # Given a message with URLs carrying a password and a bare token
    text = "fatal: unable to access 'https://bob:s3cret@git.example.com/r.git/' via http://tok3n@h/x"

    # When
    redacted = redact_credentials(text)

    # Then
    assert "s3cret" not in redacted
    assert "tok3n" not in redacted
    assert "https://***@git.example.com/r.git/" in redacted


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://u:p@ss@host.example/x", "https://***@host.example/x"),
        ("https://hooks.example.com?email=a@b.org", "https://hooks.example.com?email=a@b.org"),
        ("https://hooks.example.com/#me@there", "https://hooks.example.com/#me@there"),
    ],
)
def test_redact_credentials_hides_a_password_with_an_at_sign_and_keeps_the_host(text, shown):
    assert redact_credentials(text) == shown


def _fail_if_called(*args: Any, **kwargs: Any) -> list[Any]:
    raise AssertionError("getaddrinfo must not be called")


@pytest.mark.parametrize("host", ["faß.de", "bücher.example", "пример.испытание"])
def test_check_host_refuses_a_name_that_is_not_ascii_without_resolving(monkeypatch, host):
    # Given names whose encodings differ between resolvers (IDNA 2003 here, 2008 in curl)
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)

    # When / Then they must be written in their xn-- form
    with pytest.raises(PermanentJobError) as excinfo:
        check_host(host, allow_private=False, code="TARGET_NOT_ALLOWED")
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert "xn--" in excinfo.value.detail
    check_host("xn--fa-hia.de", allow_private=False, code="TARGET_NOT_ALLOWED", resolve=False)


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::",  # 6to4 for 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 for the metadata address
        "2002:0a00:0001::1",  # 6to4 for 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 for 127.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo to client 127.0.0.1
    ],
)
def test_ipv6_addresses_that_carry_a_non_public_ipv4_one_are_not_public(address):
    # Then git sources, HTTP targets, webhooks and the build proxy (one policy) all refuse them
    assert not is_public_address(ipaddress.ip_address(address))
    with pytest.raises(PermanentJobError):
        check_host(f"[{address}]", allow_private=False, code="SOURCE_NOT_ALLOWED", resolve=False)


@pytest.mark.parametrize(
    "address",
    [
        "fec0::1",  # IPv6 site-local (deprecated, still routed inside some networks)
        "::1.2.3.4",  # IPv4-compatible IPv6 (deprecated)
        "192.88.99.1",  # the 6to4 relay anycast
        "5f00::1",  # IPv6 segment routing
    ],
)
def test_the_deprecated_and_special_ranges_python_calls_global_are_not_public(address):
    assert not is_public_address(ipaddress.ip_address(address))


def test_an_ordinary_public_ipv6_address_stays_public():
    assert is_public_address(ipaddress.ip_address("2606:4700:4700::1111"))


def test_an_ipv4_mapped_spelling_of_a_public_address_is_judged_as_that_address():
    # The IPv6 range ::ffff:0:0/96 itself is reserved: the address inside decides
    assert is_public_address(ipaddress.ip_address("::ffff:93.184.216.34"))
    assert check_host("[::ffff:93.184.216.34]", allow_private=False, code="X", resolve=False) == (
        "::ffff:5db8:d822",
    )


@pytest.mark.parametrize("host", ["", " ", "[]", "."])
def test_check_host_refuses_a_url_without_a_host(monkeypatch, host):
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)
    with pytest.raises(PermanentJobError) as excinfo:
        check_host(host, allow_private=False, code="TARGET_INVALID")
    assert (excinfo.value.code, excinfo.value.detail) == ("TARGET_INVALID", "the URL has no host")


@pytest.mark.parametrize("allow_private", [True, False])
def test_an_outbound_session_sends_a_body_in_large_blocks(allow_private: bool) -> None:
    # Given a session for a user's URL, private addresses allowed or not
    session = network.outbound_session(allow_private=allow_private)

    # Then each of its connections sends a request's body UPLOAD_BLOCK bytes at a time, not in
    # urllib3's 16 KiB blocks (an archive of tens of MB would take thousands of reads and sends)
    for prefix in ("http://", "https://"):
        adapter = session.get_adapter(prefix + "example.com/")
        assert adapter.poolmanager.connection_pool_kw["blocksize"] == network.UPLOAD_BLOCK  # type: ignore[attr-defined]
    assert network.UPLOAD_BLOCK == 1024 * 1024
