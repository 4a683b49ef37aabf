"""Header rewriting between client and target: pure functions on raw header lists.

Headers travel as lists of ``(name, value)`` byte pairs exactly as parsed, names in their
original case. Going upstream the proxy

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

from dataclasses import dataclass
from http import HTTPStatus

from .routes import Target

__all__ = [
    "LAST_CHUNK",
    "Forwarded",
    "RequestFacts",
    "encode_chunk",
    "interim_head",
    "request_head",
    "response_head",
    "scan_request",
    "scan_response",
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
_UPGRADE_KEEP = frozenset({b"connection", b"upgrade"})
LAST_CHUNK = b"0\r\n\r\n"

Headers = list[tuple[bytes, bytes]]


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


@dataclass(slots=True)
class Forwarded:
    """What the proxy knows about one client connection, for ``X-Forwarded-*``.

    ``port`` is the default port of ``proto``; like configurable-http-proxy, a port in the
    request's ``Host`` header takes precedence (it is the port the client actually used).
    """

    client_ip: bytes
    port: bytes
    proto: bytes


def _host_port(host: bytes | None, default: bytes) -> bytes:
    if host:
        _, sep, port = host.rpartition(b":")
        if sep and port.isdigit():
            return port
    return default


@dataclass(slots=True)
class RequestFacts:
    """The request headers the proxy acts on, gathered in one pass."""

    host: bytes | None = None
    host_count: int = 0
    content_length: bool = False
    chunked: bool = False
    expect_continue: bool = False
    websocket: bool = False


def _last_coding(value: bytes) -> bytes:
    return value.rsplit(b",", 1)[-1].strip().lower()


def scan_request(headers: Headers) -> RequestFacts:
    """Collect ``Host``, body framing, ``Expect`` and ``Upgrade`` from request headers."""
    facts = RequestFacts()
    for name, value in headers:
        lname = name.lower()
        if lname == b"host":
            facts.host = value.strip()
            facts.host_count += 1
        elif lname == b"content-length":
            facts.content_length = True
        elif lname == b"transfer-encoding":
            facts.chunked = _last_coding(value) == b"chunked"
        elif lname == b"expect":
            facts.expect_continue = value.strip().lower() == b"100-continue"
        elif lname == b"upgrade":
            facts.websocket = value.strip().lower() == b"websocket"
    return facts


def scan_response(headers: Headers) -> tuple[bool, bool]:
    """``(has Content-Length, is chunked)`` for response headers."""
    length = chunked = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            length = True
        elif lname == b"transfer-encoding":
            chunked = _last_coding(value) == b"chunked"
    return length, chunked


def _dropped(headers: Headers, keep: frozenset[bytes] = frozenset()) -> frozenset[bytes]:
    """Hop-by-hop names for this message: the fixed set plus any named in ``Connection``."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    if not named:
        return HOP_BY_HOP - keep if keep else HOP_BY_HOP
    return (HOP_BY_HOP | named) - keep


def request_head(
    method: bytes,
    url: bytes,
    headers: Headers,
    *,
    target: Target,
    forwarded: Forwarded,
    chunked: bool,
    websocket: bool = False,
    host: bytes | None = None,
) -> bytes:
    """The request line and headers to send to ``target`` (always HTTP/1.1)."""
    drop = _dropped(headers)
    lines = [b"%s %s%s HTTP/1.1\r\n" % (method, target.base_path, url)]
    prior: dict[bytes, list[bytes]] = {}
    forwarded_host: bytes | None = None
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            continue
        if lname.startswith(b"x-forwarded-"):
            if lname in _FORWARDED_APPEND:
                prior.setdefault(lname, []).append(value)
                continue
            if lname == b"x-forwarded-host":
                forwarded_host = forwarded_host or value
                continue
        lines.append(b"%s: %s\r\n" % (name, value))
    if host is None:
        lines.append(b"Host: %s\r\n" % target.authority)
    values = (forwarded.client_ip, _host_port(host, forwarded.port), forwarded.proto)
    for lname, value in zip(_FORWARDED_APPEND, values, strict=True):
        lines.append(b"%s: %s\r\n" % (lname, b", ".join([*prior.get(lname, ()), value])))
    lines.append(b"x-forwarded-host: %s\r\n" % (forwarded_host or host or target.authority))
    if websocket:
        lines.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    elif chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def response_head(
    status: int,
    headers: Headers,
    *,
    chunked: bool,
    keep_alive: bool,
    http10: bool,
    upgrade: bool = False,
) -> bytes:
    """The status line and headers to send to the client for a target's final response."""
    drop = _dropped(headers, keep=_UPGRADE_KEEP if upgrade else frozenset())
    lines = [_STATUS_LINES.get(status) or status_line(status)]
    for name, value in headers:
        if name.lower() not in drop:
            lines.append(b"%s: %s\r\n" % (name, value))
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if not upgrade:
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        elif http10:
            lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def interim_head(status: int, headers: Headers) -> bytes:
    """A 1xx response (``100 Continue``, ``103 Early Hints``) relayed to the client."""
    drop = _dropped(headers)
    lines = [_STATUS_LINES.get(status) or status_line(status)]
    lines += [b"%s: %s\r\n" % (n, v) for n, v in headers if n.lower() not in drop]
    lines.append(b"\r\n")
    return b"".join(lines)
