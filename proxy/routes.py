"""The routing table: route keys, parsed targets and a segment trie for longest-prefix match.

Plain data structures without I/O, tested without sockets. A route key is a canonical path
(see :mod:`proxy.paths`) such as ``/user/alice``; with host routing the first segment is the
host name (``/alice.example.org/user/alice``). ``/`` is the default route.

Matching works on ``/``-separated segments: ``/user/alice`` matches ``/user/alice``,
``/user/alice/`` and ``/user/alice/api/x`` but not ``/user/alicex``. The longest matching
key wins; without any match (and no ``/`` route) :meth:`RouteTable.match` returns ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["Route", "RouteTable", "Target", "parse_target"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a route sends its traffic, parsed once when the route is added.

    ``scheme`` is ``http``, ``https`` or ``unix`` (``unix+http://%2Fpath%2Fto.sock``, where
    ``host`` is the socket path). ``base_path`` is prepended to the forwarded request path
    when the target URL has a path of its own (``http://10.0.0.5:8888/prefix``).
    """

    url: str
    scheme: str
    host: str
    port: int
    base_path: bytes = b""

    @property
    def pool_key(self) -> tuple[str, str, int]:
        """Connections to targets with equal keys are interchangeable."""
        return (self.scheme, self.host, self.port)

    @property
    def authority(self) -> bytes:
        """``host:port`` as sent in a ``Host`` header when the client sent none."""
        if self.scheme == "unix":
            return b"localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}".encode("ascii")


def parse_target(url: object) -> Target:
    """Parse a target URL; raise ``ValueError`` with a user-facing message if unusable."""
    if not isinstance(url, str) or not url:
        raise ValueError("target must be a non-empty URL string")
    if not (url.isascii() and url.isprintable()) or " " in url:
        raise ValueError("target URL must be printable ASCII without spaces")
    parts = urlsplit(url)
    if parts.scheme == "unix+http":
        path = unquote(parts.netloc)
        if not path.startswith("/"):
            raise ValueError("unix+http target needs an absolute, %-encoded socket path")
        return Target(url, "unix", path, 0, _base_path(parts.path))
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError("target scheme must be http, https or unix+http")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError("target port is invalid") from exc
    if not parts.hostname or parts.username or parts.password:
        raise ValueError("target needs a host (and no credentials)")
    if parts.query or parts.fragment:
        raise ValueError("target must not have a query or fragment")
    return Target(url, parts.scheme, parts.hostname, port, _base_path(parts.path))


def _base_path(path: str) -> bytes:
    return path.rstrip("/").encode("ascii")


@dataclass(slots=True, eq=False)
class Route:
    """One entry of the table.

    ``data`` is what the API client posted (``target`` included) and is returned as is;
    ``last_activity`` is a reading of the event loop's monotonic clock, refreshed by traffic
    and converted to wall-clock time only when the API reports it.
    """

    key: str
    target: Target
    data: dict[str, Any]
    last_activity: float


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    route: Route | None = None


def _segments(key: str) -> list[str]:
    return [] if key == "/" else key.split("/")[1:]


class RouteTable:
    """A segment trie of routes with exact lookup, longest-prefix match and iteration.

    Keys must already be canonical (:func:`proxy.paths.canonical_key`); the table does no
    normalisation itself, so that the hot path (:meth:`match`) stays a few dict look-ups.
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._routes: dict[str, Route] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[Route]:
        return iter(list(self._routes.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._routes

    def get(self, key: str) -> Route | None:
        """The route stored under exactly ``key``, or ``None``."""
        return self._routes.get(key)

    def add(self, route: Route) -> Route | None:
        """Insert or replace the route under ``route.key``; return the replaced one."""
        node = self._root
        for segment in _segments(route.key):
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _Node()
            node = child
        previous, node.route = node.route, route
        self._routes[route.key] = route
        return previous

    def remove(self, key: str) -> Route | None:
        """Remove and return the route under ``key`` (``None`` if absent), pruning the trie."""
        route = self._routes.pop(key, None)
        if route is None:
            return None
        path = [self._root]
        segments = _segments(key)
        for segment in segments:
            path.append(path[-1].children[segment])
        path[-1].route = None
        for depth in range(len(segments), 0, -1):
            node = path[depth]
            if node.route is not None or node.children:
                break
            del path[depth - 1].children[segments[depth - 1]]
        return route

    def match(self, path: str) -> Route | None:
        """Return the route with the longest key that is a segment prefix of ``path``."""
        node = self._root
        best = node.route
        for segment in path.split("/")[1:]:
            child = node.children.get(segment)
            if child is None:
                break
            node = child
            if node.route is not None:
                best = node.route
        return best
