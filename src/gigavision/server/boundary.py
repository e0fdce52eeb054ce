"""The access boundary, checked before any route runs (docs/server.md, "Access boundary").

- **Host**: the ``Host`` header must name this server: a loopback name or address (``localhost``,
  ``127.0.0.0/8``, ``::1``; any port), an entry of ``[server] allowed_hosts``, or the IP address the connection
  arrived at. Anything else is a 400: a browser that a foreign page pointed at this server through DNS
  rebinding sends the attacker's name (an IP literal cannot be rebound).
- **Origin**: an unsafe method (anything but GET, HEAD, OPTIONS) whose ``Origin`` (or, lacking it, ``Referer``)
  is not this server's own origin (scheme, host and port of the request) is a 403: a foreign page's form or
  fetch cannot write. Requests with neither header (scripts, curl) pass; logins add their own CSRF check.
- **CORS**: only GET / HEAD (and their preflight) under ``/iiif/`` and ``/dzi/`` are readable cross-origin, and
  only by ``[server] cors_origins``; nothing else ever gets an ``Access-Control-Allow-Origin``.

Pure ASGI like ``SecurityHeaders``: ``BaseHTTPMiddleware`` would cost tile requests a quarter of their CPU.
Starlette's ``TrustedHostMiddleware`` does not fit: it matches names only (no ``127.0.0.0/8`` range, no
IPv4-mapped ``::1``), ignores ports, and answers plain text instead of the app's JSON error.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gigavision.config import ServerSettings
from gigavision.errors import ConfigError
from gigavision.server.errors import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CORS_METHODS = ("GET", "HEAD")
# The tile routes (routers/tiles.py, routers/layers.py): public images meant to be embedded by other viewers.
TILE_PREFIXES = ("/iiif/", "/dzi/")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# host, [IPv6], optionally :port (RFC 9110 Host = uri-host [ ":" port ]).
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::(?P<port>[0-9]{1,5}))?")


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"Name.example:8000"`` → ``("name.example", 8000)``; ``"[::1]"`` → ``("::1", None)``; None if malformed.
    Lower case, brackets and one trailing dot removed (``localhost.`` is ``localhost``)."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    port = int(match["port"]) if match["port"] else None
    if port is not None and port > 65535:
        return None
    if match["v6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["v6"])), port
        except ValueError:
            return None
    name = match["name"].lower().removesuffix(".")
    return (name, port) if name else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@dataclass(frozen=True)
class HostPattern:
    """One ``allowed_hosts`` entry: ``name`` (any port), ``name:port``, ``*.example.org`` (subdomains only) or
    ``.example.org`` (the name and its subdomains)."""

    host: str
    port: int | None = None
    subdomains: bool = False
    itself: bool = True

    @classmethod
    def parse(cls, entry: str) -> HostPattern:
        text = entry.strip()
        subdomains, itself = text.startswith(("*.", ".")), not text.startswith("*.")
        rest = text.removeprefix("*").removeprefix(".") if subdomains else text
        parsed = split_host(rest)
        if parsed is None or parsed[0].startswith("."):
            raise ConfigError(
                f"[server] allowed_hosts: {entry!r} is not a host name (e.g. 'gv.example.org', "
                "'gv.example.org:8443', '*.example.org', '.example.org' or '*')"
            )
        return cls(parsed[0], parsed[1], subdomains, itself)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return (self.itself and host == self.host) or (self.subdomains and host.endswith("." + self.host))


def origin_of(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an ``Origin`` or ``Referer`` value; None for ``null`` or anything malformed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    parsed = split_host(f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname)
    if parsed is None:
        return None
    return scheme, parsed[0], port if port is not None else DEFAULT_PORTS[scheme]


def _cors_origin(entry: str) -> str:
    """A ``cors_origins`` entry as browsers send it (``scheme://host[:port]``, no path), or ``*``."""
    if entry == "*":
        return entry
    parts = urlsplit(entry)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or origin_of(entry) is None
    ):
        raise ConfigError(
            f"[server] cors_origins: {entry!r} is not an origin (scheme://host[:port], e.g. "
            "'https://viewer.example.org', or '*' for any)"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class BoundaryPolicy:
    """What ``[server]`` allows, checked once when the app is made (a bad entry stops the start-up)."""

    allowed_hosts: tuple[HostPattern, ...] = ()
    any_host: bool = False
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> BoundaryPolicy:
        entries = [e.strip() for e in settings.allowed_hosts if e.strip()]
        return cls(
            allowed_hosts=tuple(HostPattern.parse(e) for e in entries if e != "*"),
            any_host="*" in entries,
            cors_origins=tuple(dict.fromkeys(_cors_origin(e.strip()) for e in settings.cors_origins if e.strip())),
        )

    def host_allowed(self, host: str, port: int) -> bool:
        return self.any_host or is_loopback(host) or any(p.matches(host, port) for p in self.allowed_hosts)


def _arrival_address(value: bytes, scope: Scope) -> tuple[str, int] | None:
    """``(host, port)`` when the Host is the IP address this connection arrived at (``http://10.0.0.5:8000``
    typed in a browser): an IP literal cannot be rebound, only a name can. None otherwise."""
    parsed, server = split_host(value.decode("latin-1")), scope.get("server")
    if parsed is None or not server:
        return None
    try:
        same = ipaddress.ip_address(parsed[0]) == ipaddress.ip_address(str(server[0]))
    except ValueError:  # a name, or a server that is not an IP socket (TestClient's "testserver", a Unix socket)
        return None
    port = parsed[1] if parsed[1] is not None else DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)
    return (parsed[0], port) if same else None


def _vary_origin(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"vary", b"Origin")]
        await send(message)

    return sending


def _headers(scope: Scope, names: Iterable[bytes]) -> dict[bytes, list[bytes]]:
    wanted: dict[bytes, list[bytes]] = {name: [] for name in names}
    for name, value in scope["headers"]:
        if name in wanted:
            wanted[name].append(value)
    return wanted


class AccessBoundary:
    """Host check, then Origin check on unsafe methods, then CORS for tiles only (see the module docstring)."""

    def __init__(self, app: ASGIApp, policy: BoundaryPolicy) -> None:
        self.app = app
        self.policy = policy
        # Starlette's CORS middleware, applied only where cross-origin reads are meant to work, and only to
        # requests that carry an Origin (it costs ~25 us a request, a stored tile's whole budget is ~1 ms).
        self.cors: ASGIApp | None = None
        if policy.cors_origins:
            self.cors = CORSMiddleware(
                app, allow_origins=policy.cors_origins, allow_methods=CORS_METHODS, allow_headers=["*"]
            )
        # Few distinct Host values reach a server; a flood of made-up ones only evicts entries.
        self._host_allowed = lru_cache(maxsize=1024)(self._check_host)

    def _check_host(self, value: bytes, scheme: str) -> tuple[str, int] | None:
        """``(host, port)`` when ``value`` names this server, else None."""
        parsed = split_host(value.decode("latin-1"))
        if parsed is None:
            return None
        host, port = parsed
        port = port if port is not None else DEFAULT_PORTS.get(scheme, 80)
        return (host, port) if self.policy.host_allowed(host, port) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        found = _headers(scope, (b"host", b"origin", b"referer"))
        scheme = scope.get("scheme", "http")
        hosts = found[b"host"]
        own = self._host_allowed(hosts[0], scheme) if len(hosts) == 1 else None
        if own is None and len(hosts) == 1:
            own = _arrival_address(hosts[0], scope)
        if own is None:
            shown = hosts[0].decode("latin-1")[:100] if hosts else ""
            reason = (
                "the request has no Host header"
                if not hosts
                else "the request has several Host headers"
                if len(hosts) > 1
                else f"Host {shown!r} is not a name of this server (loopback, or [server] allowed_hosts in "
                "gigavision.toml)"
            )
            await self._refuse(scope, receive, send, 400, "invalid_host", reason)
            return

        method = scope.get("method", "GET")
        if kind == "websocket" or method not in SAFE_METHODS:
            claimed = next(iter(found[b"origin"] or found[b"referer"]), None)
            if claimed is not None:
                expected = ({"ws": "http", "wss": "https"}.get(scheme, scheme), *own)
                if origin_of(claimed.decode("latin-1")) != expected:
                    origin = claimed.decode("latin-1")[:100]
                    header = "Origin" if found[b"origin"] else "Referer"
                    message = (
                        f"{method} refused: {header} {origin!r} is not this server's origin; unsafe requests are "
                        "accepted from this server's own pages, or from clients that send no Origin (scripts)"
                    )
                    await self._refuse(scope, receive, send, 403, "forbidden", message)
                    return

        if kind == "http" and method in (*CORS_METHODS, "OPTIONS"):
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if self.cors is not None and path.startswith(TILE_PREFIXES):
                if found[b"origin"]:
                    await self.cors(scope, receive, send)
                else:  # what the CORS middleware adds here: the answer differs by Origin, caches must know
                    await self.app(scope, receive, _vary_origin(send))
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await error_response(status, code, message)(scope, receive, send)
