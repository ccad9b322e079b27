"""What a web browser may ask of the admin API: the defence against cross-site requests and DNS
rebinding (docs/security.md).

A page the operator opens elsewhere can make the browser send requests to the node; the browser
then adds what the page cannot forge. The rules below use exactly that:

- A write with a body must be `Content-Type: application/json`. A cross-origin page can send
  `text/plain`, a form or no type at all without a CORS preflight; `application/json` needs a
  preflight, which this API never grants. Bodiless writes (pause, resume, cancel, delete) carry
  no payload to smuggle, and the `Origin` rule covers them.
- `Origin`, when present, must be the node's own origin (`scheme://` + the request's `Host`) or one
  of `allowed_origins`. `Origin: null` (sandboxed frames, `file:` pages, some redirects) and
  `Sec-Fetch-Site: cross-site` are refused outright. Requests without `Origin` — the CLI, scripts,
  curl, a browser's own navigation — are unaffected.
- On a loopback bind, `Host` must be a loopback name or address: a page on `attacker.example`
  whose DNS name was re-pointed at 127.0.0.1 sends `Host: attacker.example` and is refused, so it
  can neither act nor read answers.

Every rule runs before authentication and applies to every path, the dashboard's files included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from ..config import Origin, is_loopback_host, normalized_origin
from ..errors import ForbiddenHost, ForbiddenOrigin, UnsupportedMediaType, quoted

__all__ = ["BrowserPolicy", "is_loopback_name"]

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON = "application/json"


def _host_name(host: str) -> str:
    """The name part of a `Host` header value: `[::1]:8101` -> `::1`, `localhost:8101` -> `localhost`."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def is_loopback_name(host: str) -> bool:
    """Whether a `Host` header value names this machine's loopback (port or not)."""
    return is_loopback_host(_host_name(host))


@dataclass(frozen=True, slots=True, kw_only=True)
class BrowserPolicy:
    """The rules of the module docstring for one node."""

    loopback_bind: bool
    allowed_origins: frozenset[Origin] = frozenset()

    @classmethod
    def build(cls, *, loopback_bind: bool, allowed_origins: Iterable[str] = ()) -> BrowserPolicy:
        return cls(
            loopback_bind=loopback_bind,
            allowed_origins=frozenset(normalized_origin(origin) for origin in allowed_origins),
        )

    def check(self, request: web.Request) -> None:
        """Raise the matching error for a request a browser must not get through."""
        host = request.headers.get("Host")
        if self.loopback_bind and host is not None and not is_loopback_name(host):
            raise ForbiddenHost(
                f"Host {quoted(host[:200])} is not a loopback name: this node answers only to localhost, "
                "127.0.0.1 or [::1] (a foreign name pointing here is a DNS rebinding attempt)",
                field="Host",
            )
        if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            raise ForbiddenOrigin("cross-site requests are refused", field="Origin")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request):
            raise ForbiddenOrigin(
                f"Origin {quoted(origin[:200])} is neither this node's own nor in allowed_origins",
                field="Origin",
            )
        if request.method in _WRITES and request.body_exists and request.content_type != _JSON:
            raise UnsupportedMediaType(
                f"a request body must be sent as {_JSON}, not {quoted(request.content_type)}",
                field="Content-Type",
            )

    def _origin_allowed(self, origin: str, request: web.Request) -> bool:
        try:
            given = normalized_origin(origin)
        except ValueError:
            return False  # "null" included
        if given in self.allowed_origins:
            return True
        host = request.headers.get("Host")
        if host is None:
            return False
        try:
            own = normalized_origin(f"{request.scheme}://{host}")
        except ValueError:
            return False
        return given == own
