"""Who may open a stream: the bearer token and the browser origin checks.

Token: ``Authorization: Bearer <token>`` or, for browsers (which cannot set
headers on a WebSocket), the query parameter ``?token=<token>``; compared in
constant time. Origin: browsers send ``Origin`` with every WebSocket
handshake, so a page from another site is refused unless its origin is in
``allowed_origins`` (``*`` allows any); the server's own page (an origin
whose host and port are the ``Host`` the browser connected to) always
passes, and so do clients that send no ``Origin`` (command-line programs
are not browsers).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from server.protocol import ErrorKind, ProtocolError
from server.settings import Settings


def presented_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
  """The token a client presents, if any."""
  scheme, _, credentials = headers.get("authorization", "").partition(" ")
  if scheme.lower() == "bearer" and credentials:
    return credentials.strip()
  return query.get("token")


def same_origin(origin: str, host: str | None) -> bool:
  """Whether a page at ``origin`` came from this server (reached as ``host``)."""
  return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def check_access(headers: Mapping[str, str], query: Mapping[str, str], settings: Settings) -> None:
  """Raises ``ProtocolError`` (close 1008) for a foreign origin or a missing or wrong token."""
  origin = headers.get("origin")
  allowed = settings.allowed_origins
  foreign = origin is not None and not same_origin(origin, headers.get("host"))
  if foreign and "*" not in allowed and origin not in allowed:
    raise ProtocolError(ErrorKind.ORIGIN_NOT_ALLOWED, f"origin {origin!r} is not allowed")
  if settings.token is not None:
    token = presented_token(headers, query)
    expected = settings.token.get_secret_value().encode()
    if token is None or not hmac.compare_digest(token.encode(), expected):
      raise ProtocolError(ErrorKind.UNAUTHORIZED, "a valid bearer token is required")
