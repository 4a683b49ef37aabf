"""Header rewriting between client and target, without I/O.

Headers are sorted *as they are parsed*: the parser callbacks feed each ``(name, value)`` to a
:class:`RequestHeaders` or :class:`ResponseHeaders`, which lower-cases the name once, renders
end-to-end headers straight into the bytes to forward (original case kept), and records the
few the proxy acts on. Building the outgoing head is then a join — this is the hot path.

Going upstream the proxy

* removes hop-by-hop headers (RFC 9110 §7.6.1): ``Connection`` and every header it names,
  ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``,
  ``Proxy-Authorization``, ``Proxy-Authenticate`` — except the ``Upgrade``/``Connection`` pair
  of a WebSocket handshake;
* keeps ``Host`` as the client sent it;
* appends the client address, port and scheme to ``X-Forwarded-For/-Port/-Proto`` and keeps
  (or sets) ``X-Forwarded-Host``, as configurable-http-proxy does;
* re-frames the body itself (``Content-Length`` is passed through, chunked bodies re-chunked).

Coming back it strips the same hop-by-hop set and adds its own framing and ``Connection``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from .routes import Target

__all__ = [
    "HOP_BY_HOP",
    "LAST_CHUNK",
    "Forwarded",
    "RequestHeaders",
    "ResponseHeaders",
    "encode_chunk",
    "interim_head",
    "request_head",
    "response_head",
    "status_line",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
_FORWARDED_APPEND = (b"x-forwarded-for", b"x-forwarded-port", b"x-forwarded-proto")
_REQUEST_SPECIAL = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-port",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
_RESPONSE_SPECIAL = HOP_BY_HOP | {b"content-length"}
_COMMON_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})
LAST_CHUNK = b"0\r\n\r\n"


def status_line(status: int) -> bytes:
    """``HTTP/1.1 404 Not Found\\r\\n`` (the reason phrase is ours, not the target's)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("ascii"))


_STATUS_LINES = {status.value: status_line(status.value) for status in HTTPStatus}


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _tokens(value: bytes) -> frozenset[bytes]:
    """Names in a ``Connection`` value beyond the fixed hop-by-hop set (usually none)."""
    if value.strip().lower() in _COMMON_CONNECTION:
        return frozenset()
    return frozenset(token.strip().lower() for token in value.split(b",")) - HOP_BY_HOP


def _without(lines: list[bytes], names: frozenset[bytes]) -> list[bytes]:
    """``lines`` (groups of name, ": ", value, CRLF) minus the headers in ``names``."""
    kept: list[bytes] = []
    for i in range(0, len(lines), 4):
        if lines[i].lower() not in names:
            kept += lines[i : i + 4]
    return kept


class RequestHeaders:
    """A request's headers, sorted while parsed (see the module docstring).

    ``lines`` holds the end-to-end headers ready to forward; the other attributes are what
    the proxy acts on: ``host`` (and how many ``Host`` headers came), body framing
    (``content_length``, ``chunked``, ``other_coding`` — a transfer-coding besides chunked),
    ``expect_continue``, ``websocket`` (``Upgrade: websocket``), the client's own
    ``X-Forwarded-*`` values and the extra names its ``Connection`` header declared hop-by-hop.
    """

    __slots__ = (
        "chunked",
        "content_length",
        "count",
        "expect_continue",
        "extra",
        "forwarded_host",
        "host",
        "host_count",
        "lines",
        "other_coding",
        "prior",
        "websocket",
    )

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.count = self.host_count = 0
        self.host: bytes | None = None
        self.content_length = self.chunked = self.other_coding = False
        self.expect_continue = self.websocket = False
        self.prior: dict[bytes, list[bytes]] | None = None
        self.forwarded_host: bytes | None = None
        self.extra: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, headers: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
        collected = cls()
        for name, value in headers:
            collected.add(name, value)
        return collected

    def add(self, name: bytes, value: bytes) -> None:
        self.count += 1
        lname = name.lower()
        if lname not in _REQUEST_SPECIAL:
            self.lines += (name, b": ", value, b"\r\n")
        else:
            self._special(lname, name, value)

    def _special(self, lname: bytes, name: bytes, value: bytes) -> None:
        if lname in HOP_BY_HOP:
            self._hop_by_hop(lname, value)
            return
        if lname == b"x-forwarded-host":
            self.forwarded_host = self.forwarded_host or value
            return
        if lname in _FORWARDED_APPEND:  # the proxy appends its own value to the client's
            if self.prior is None:
                self.prior = {}
            self.prior.setdefault(lname, []).append(value)
            return
        if lname == b"host":
            self.host = value.strip()
            self.host_count += 1
        elif lname == b"content-length":
            self.content_length = True
        elif lname == b"expect":
            self.expect_continue = value.strip().lower() == b"100-continue"
        self.lines += (name, b": ", value, b"\r\n")

    def _hop_by_hop(self, lname: bytes, value: bytes) -> None:
        if lname == b"transfer-encoding":  # the proxy frames the body itself
            codings = value.strip().lower()
            self.chunked = codings.rsplit(b",", 1)[-1].strip() == b"chunked"
            self.other_coding = codings != b"chunked"
        elif lname == b"upgrade":
            self.websocket = value.strip().lower() == b"websocket"
        elif lname == b"connection":
            self.extra = self.extra | _tokens(value)


@dataclass(slots=True)
class Forwarded:
    """What the proxy knows about one client connection, for ``X-Forwarded-*``.

    ``port`` is the default port of ``proto``; like configurable-http-proxy, a port in the
    request's ``Host`` header takes precedence (it is the port the client actually used).
    The rendered headers are cached per ``Host`` value: a connection rarely changes it.
    """

    client_ip: bytes
    port: bytes
    proto: bytes
    _cached_host: bytes | None = None
    _cached: bytes = b""

    def render(self, headers: RequestHeaders, fallback_host: bytes) -> bytes:
        host = headers.host
        plain = headers.prior is None and headers.forwarded_host is None
        if plain and host is not None and host == self._cached_host:
            return self._cached
        prior = headers.prior or {}
        values = (self.client_ip, _host_port(host, self.port), self.proto)
        parts = [
            b"%s: %s\r\n" % (lname, b", ".join([*prior.get(lname, ()), value]))
            for lname, value in zip(_FORWARDED_APPEND, values, strict=True)
        ]
        forwarded_host = headers.forwarded_host or host or fallback_host
        parts.append(b"x-forwarded-host: %s\r\n" % forwarded_host)
        rendered = b"".join(parts)
        if plain and host is not None:
            self._cached_host, self._cached = host, rendered
        return rendered


def _host_port(host: bytes | None, default: bytes) -> bytes:
    if host:
        _, sep, port = host.rpartition(b":")
        if sep and port.isdigit():
            return port
    return default


def request_head(
    method: bytes,
    url: bytes,
    headers: RequestHeaders,
    *,
    target: Target,
    forwarded: Forwarded,
) -> bytes:
    """The request line and headers to send to ``target`` (always HTTP/1.1)."""
    lines = _without(headers.lines, headers.extra) if headers.extra else headers.lines
    parts = [b"%s %s%s HTTP/1.1\r\n" % (method, target.base_path, url), *lines]
    if headers.host is None:
        parts.append(b"Host: %s\r\n" % target.authority)  # an HTTP/1.0 client sent none
    parts.append(forwarded.render(headers, target.authority))
    if headers.websocket:
        parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    elif headers.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class ResponseHeaders:
    """A target's response headers, sorted while parsed.

    ``lines`` holds the end-to-end headers to relay; ``content_length`` and ``chunked`` give
    the framing; ``upgrade_lines`` keeps ``Connection``/``Upgrade`` for a ``101`` answer.
    """

    __slots__ = ("chunked", "content_length", "extra", "lines", "upgrade_lines")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.upgrade_lines: list[bytes] = []
        self.content_length = self.chunked = False
        self.extra: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, headers: Iterable[tuple[bytes, bytes]]) -> ResponseHeaders:
        collected = cls()
        for name, value in headers:
            collected.add(name, value)
        return collected

    def add(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname not in _RESPONSE_SPECIAL:
            self.lines += (name, b": ", value, b"\r\n")
        elif lname == b"content-length":
            self.content_length = True
            self.lines += (name, b": ", value, b"\r\n")
        elif lname == b"transfer-encoding":
            self.chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        elif lname == b"connection" or lname == b"upgrade":
            if lname == b"connection":
                self.extra = self.extra | _tokens(value)
            self.upgrade_lines += (name, b": ", value, b"\r\n")


def response_head(
    status: int,
    headers: ResponseHeaders,
    *,
    chunked: bool,
    keep_alive: bool,
    http10: bool,
    upgrade: bool = False,
) -> bytes:
    """The status line and headers to send to the client for a target's final response."""
    parts = [_STATUS_LINES.get(status) or status_line(status)]
    parts += _without(headers.lines, headers.extra) if headers.extra else headers.lines
    if upgrade:
        parts += headers.upgrade_lines
    else:
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        elif http10:
            parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def interim_head(status: int, headers: ResponseHeaders) -> bytes:
    """A 1xx response (``100 Continue``, ``103 Early Hints``) relayed to the client."""
    parts = [_STATUS_LINES.get(status) or status_line(status), *headers.lines, b"\r\n"]
    return b"".join(parts)
