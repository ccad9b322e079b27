"""HTTP tasks: one request, no redirects, only to addresses the node's policy allows.

Fences (DESIGN.md §5): http and https only; redirects are not followed (a 3xx is just a status,
judged by `expect_status`); loopback, link-local, private, multicast, unspecified, reserved and
other non-global addresses are refused unless inside one of the node's `http_allow` networks.

The address check lives in the connector's resolver, so aiohttp connects only to addresses that
passed it: a DNS answer cannot change between the check and the connection (DNS rebinding).
IP literals, which aiohttp does not resolve, are checked before the request starts. Either way a
refused target sees no connection at all. One session serves every job of the node, so it keeps
no cookies, and it ignores proxy settings from the environment.

Identity headers (`X-Raftsched-*`) always win: task headers of that prefix are dropped,
whatever their case. Header values that are secret references are resolved from the node's
`ExecPolicy.secrets` when the run starts; a missing one fails the run, naming the secret.
A non-string body is sent as JSON with `Content-Type: application/json` unless the task sets its
own Content-Type.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path

import aiohttp
import orjson
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from ..model import TaskSpec
from ..secretstore import SecretStore
from .base import (
    ExecPolicy,
    ExecResult,
    OutputSink,
    Refused,
    RunContext,
    failed,
    identity_headers,
    resolve_secrets,
    timed_out,
)

__all__ = ["AddressRefused", "FencedResolver", "HttpExecutor", "literal_refusal", "looks_like_ip", "refusal"]

IPAddress = IPv4Address | IPv6Address
Networks = Sequence[IPv4Network | IPv6Network]
CONNECT_TIMEOUT_S = 10.0
_NAT64 = IPv6Network("64:ff9b::/96")


class AddressRefused(OSError):
    """Raised by `FencedResolver`; aiohttp hands it back inside ClientConnectorDNSError."""


def refusal(addr: IPAddress, allow: Networks) -> str | None:
    """Why the policy refuses `addr`, or None if it may be dialled. `allow` always wins."""
    views = _views(addr)
    if any(views[0] in net for net in allow):
        return None
    for view in views:
        kind = _special_kind(view)
        if kind is not None:
            return f"{addr} is a {kind} address, not in http_allow"
    return None


def _views(addr: IPAddress) -> list[IPAddress]:
    """The address as the network treats it: a v4-mapped v6 is its v4; 6to4 and NAT64 carry one."""
    if not isinstance(addr, IPv6Address):
        return [addr]
    if addr.ipv4_mapped is not None:
        return [addr.ipv4_mapped]
    nat64 = IPv4Address(int(addr) & 0xFFFFFFFF) if addr in _NAT64 else None
    return [addr, *(v for v in (addr.sixtofour, nat64) if v is not None)]


def _special_kind(addr: IPAddress) -> str | None:
    checks = (
        ("unspecified", addr.is_unspecified),
        ("loopback", addr.is_loopback),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("private", addr.is_private),
        ("reserved", addr.is_reserved),
        ("site-local", isinstance(addr, IPv6Address) and addr.is_site_local),
        ("non-global", not addr.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


class FencedResolver(ThreadedResolver):
    """Resolves with `loop.getaddrinfo`, then keeps only the addresses the policy allows."""

    def __init__(self, allow: Networks) -> None:
        super().__init__()
        self._allow = tuple(allow)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        reasons = [_result_refusal(result, self._allow) for result in results]
        kept = [result for result, reason in zip(results, reasons, strict=True) if reason is None]
        if not kept:
            why = "; ".join(reason for reason in reasons if reason) or "no address"
            raise AddressRefused(f"{host}: {why}")
        return kept


def _result_refusal(result: ResolveResult, allow: Networks) -> str | None:
    try:
        return refusal(ip_address(result["host"]), allow)
    except ValueError:
        return f"{result['host']!r}, not an IP address"


class HttpExecutor:
    """Runs `http` tasks; see `Executor` for the contract. Call `close()` when done."""

    def __init__(self, policy: ExecPolicy) -> None:
        self._policy = policy
        self._session: aiohttp.ClientSession | None = None

    async def run(
        self,
        task: TaskSpec,
        ctx: RunContext,
        *,
        timeout_s: float | None,
        output_path: Path | None,
        on_group: Callable[[int], None] | None = None,
    ) -> ExecResult:
        try:
            url = check_url(task.url, self._policy.http_allow)
            body, headers = request_parts(task, ctx, self._policy.secrets)
        except Refused as exc:
            return failed(f"refused: {exc}")
        except TypeError as exc:  # orjson.JSONEncodeError
            return failed(f"body cannot be sent as JSON: {exc}")
        with OutputSink.for_policy(self._policy, output_path) as sink:
            return await self._exchange(task, url, body, headers, timeout_s, sink)

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, str]:
        """POST `body` to `url` under this node's fences, through the run's session (alert
        webhooks): the status and the start of the answer. Raises Refused for a fenced target,
        TimeoutError, aiohttp.ClientError or OSError for a failed exchange."""
        checked = check_url(url, self._policy.http_allow)
        with OutputSink.for_policy(self._policy, None) as sink:
            try:
                async with asyncio.timeout(timeout_s):
                    status = await self._request("POST", checked, body, headers, timeout_s, sink)
            except aiohttp.ClientConnectorDNSError as exc:
                raise Refused(_dns_error(checked, exc)) from None
            return status, sink.tail_text()[:200]

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _session_for_run(self) -> aiohttp.ClientSession:
        """Created lazily: it needs the running loop."""
        if self._session is None or self._session.closed:
            # No pool limit: the worker bounds concurrency, and a queued request would eat its
            # connect timeout waiting for a slot.
            connector = aiohttp.TCPConnector(
                resolver=FencedResolver(self._policy.http_allow), use_dns_cache=False, limit=0
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def _exchange(
        self,
        task: TaskSpec,
        url: URL,
        body: str | bytes | None,
        headers: dict[str, str],
        timeout_s: float | None,
        sink: OutputSink,
    ) -> ExecResult:
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                status = await self._request(task.method, url, body, headers, timeout_s, sink)
        except TimeoutError:
            if deadline.expired():
                return timed_out(timeout_s or 0.0, output_tail=sink.tail_text())
            return failed(f"connect timed out after {CONNECT_TIMEOUT_S:g} s", output_tail=sink.tail_text())
        except aiohttp.ClientConnectorDNSError as exc:
            return failed(_dns_error(url, exc), output_tail=sink.tail_text())
        except (aiohttp.ClientError, OSError) as exc:
            return failed(f"{type(exc).__name__}: {exc}", output_tail=sink.tail_text())
        return judge(status, task.expect_status, sink.tail_text())

    async def _request(
        self,
        method: str,
        url: URL,
        body: str | bytes | None,
        headers: dict[str, str],
        timeout_s: float | None,
        sink: OutputSink,
    ) -> int:
        """Send, stream the body into the sink, return the status. The run's deadline is the
        caller's; here only connecting is limited (when the deadline is further than that)."""
        connect_s = CONNECT_TIMEOUT_S if timeout_s is None or timeout_s > CONNECT_TIMEOUT_S else None
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_s, sock_connect=connect_s)
        session = self._session_for_run()
        async with session.request(
            method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
        ) as response:
            async for chunk in response.content.iter_any():
                sink.write(chunk)
            return response.status


def check_url(raw: str | None, allow: Networks) -> URL:
    """Scheme and, for an IP literal, the address: refused before anything is sent."""
    if not raw:
        raise Refused("http task without a url")
    try:
        url = URL(raw)
    except ValueError as exc:
        raise Refused(f"bad url: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise Refused(f"scheme {url.scheme!r}: only http and https")
    host = url.raw_host
    if not host:
        raise Refused("url without a host")
    reason = literal_refusal(host, allow)
    if reason is not None:
        raise Refused(reason)
    return url


def looks_like_ip(host: str) -> bool:
    """aiohttp's own test for "do not resolve this": keep them in step, or a literal escapes."""
    return ":" in host or host.replace(".", "").isdigit()


def literal_refusal(host: str, allow: Networks) -> str | None:
    """Why the fence refuses `host` as an IP literal; None if allowed, or a name (those are
    checked when resolved, by `FencedResolver`)."""
    return _literal_refusal(host, tuple(allow)) if looks_like_ip(host) else None


@functools.lru_cache(maxsize=1024)
def _literal_refusal(host: str, allow: tuple[IPv4Network | IPv6Network, ...]) -> str | None:
    """Why a literal IP host is refused (None: allowed). Pure, so cached: a job calling the same
    address every second parsed and checked it on every run (2-3 % of a worker's loop)."""
    try:
        addr = ip_address(host)
    except ValueError:
        return f"{host!r} is not a canonical IP address"
    return refusal(addr, allow)


def request_parts(
    task: TaskSpec, ctx: RunContext, secrets: SecretStore | None = None
) -> tuple[str | bytes | None, dict[str, str]]:
    """Body and headers: task headers minus any `X-Raftsched-*` (secret references resolved from
    `secrets`; `Refused` names a missing one), then the identity headers."""
    own = {name: value for name, value in task.headers.items() if not name.lower().startswith("x-raftsched-")}
    headers = resolve_secrets(own, secrets or SecretStore())
    body: str | bytes | None = task.body
    if body is not None and not isinstance(body, str):
        body = orjson.dumps(body)  # raises TypeError (orjson.JSONEncodeError)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    headers.update(identity_headers(ctx))
    return body, headers


def judge(status: int, expect: Sequence[tuple[int, int]], tail: str) -> ExecResult:
    if any(low <= status <= high for low, high in expect):
        return ExecResult(outcome="succeeded", http_status=status, output_tail=tail)
    return ExecResult(
        outcome="failed", http_status=status, error=f"unexpected status {status}", output_tail=tail
    )


def _dns_error(url: URL, exc: aiohttp.ClientConnectorDNSError) -> str:
    if isinstance(exc.os_error, AddressRefused):
        return f"refused: {exc.os_error}"
    return f"cannot resolve {url.raw_host}: {exc.os_error}"
