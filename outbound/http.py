"""Outbound HTTP to subscribers' endpoints, guarded against server-side request forgery.

A subscriber's URL is typed by staff, and the host name it names may resolve anywhere later
(DNS rebinding). So the address is checked when the URL is saved (:func:`url_problem`) and, what
counts, on every connection: the socket's peer address, after connecting, must be a public
unicast address; a private, loopback, link-local, multicast or reserved one closes the
connection before a byte is sent. Only ``SIBLING_SUBSCRIBER_ALLOW_HTTP`` (development and tests)
allows http and such addresses. No proxy from the environment is used (the peer would be the
proxy) and redirects are never followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

PRIVATE_REFUSED = "refused: the endpoint's address is private, loopback or reserved"
HTTP_REFUSED = "Use an https:// URL (http is allowed only in development)."
USER_AGENT = "Sibling-Webhooks/1"


def allow_private() -> bool:
    return bool(getattr(settings, "SIBLING_SUBSCRIBER_ALLOW_HTTP", False))


def address_public(address: str) -> bool:
    """True for a global unicast address (an IPv4-mapped IPv6 address is judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _peer_check(connection: HTTPConnection, sock: socket.socket) -> None:
    if allow_private():
        return
    peer = sock.getpeername()[0]
    if not address_public(peer):
        sock.close()
        # urllib3 reports it as any connection failure; requests raises ConnectionError.
        raise NewConnectionError(connection, PRIVATE_REFUSED)


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _peer_check(self, sock)
        return sock


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _peer_check(self, sock)
        return sock


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }


def session_new() -> requests.Session:
    """A session whose every connection is checked, with no proxy taken from the environment."""
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def url_problem(url: str) -> str | None:
    """Why this URL cannot be a subscriber's endpoint, in words for staff; None if it can.
    Checked when it is saved; the address is checked again on every connection."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "Enter an https:// URL."
    if parts.username or parts.password:
        return "The URL must not carry a user name or password."
    if allow_private():
        return None
    if parts.scheme != "https":
        return HTTP_REFUSED
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return "The endpoint's host name does not resolve."
    if any(not address_public(str(info[4][0])) for info in infos):
        return "The endpoint resolves to a private, loopback or reserved address."
    return None
