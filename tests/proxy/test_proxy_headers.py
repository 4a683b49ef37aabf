"""Header rewriting between client and target, without sockets."""

from __future__ import annotations

from proxy.headers import (
    Forwarded,
    RequestHeaders,
    ResponseHeaders,
    encode_chunk,
    interim_head,
    request_head,
    response_head,
    status_line,
)
from proxy.routes import Target, parse_target

TARGET = parse_target("http://127.0.0.1:9000")


def _fwd(proto: bytes = b"http") -> Forwarded:
    return Forwarded(b"10.0.0.7", b"443" if proto == b"https" else b"80", proto)


def _lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def _headers(head: bytes) -> dict[bytes, bytes]:
    got: dict[bytes, bytes] = {}
    for line in _lines(head)[1:]:
        name, _, value = line.partition(b": ")
        assert name.lower() not in got, f"duplicate {name!r}"
        got[name.lower()] = value
    return got


def _request(headers: list[tuple[bytes, bytes]], forwarded: Forwarded | None = None,
             target: Target = TARGET, url: bytes = b"/") -> bytes:
    return request_head(b"GET", url, RequestHeaders.of(headers), target=target,
                        forwarded=forwarded or _fwd())


def test_request_keeps_end_to_end_headers_and_host() -> None:
    head = _request([(b"Host", b"hub.example.org"), (b"Cookie", b"a=b"), (b"Accept", b"*/*")],
                    url=b"/user/a/x?y=1")
    assert _lines(head)[0] == b"GET /user/a/x?y=1 HTTP/1.1"
    assert b"Cookie: a=b" in _lines(head)  # original case kept
    got = _headers(head)
    assert got[b"host"] == b"hub.example.org"
    assert got[b"accept"] == b"*/*"
    assert got[b"x-forwarded-for"] == b"10.0.0.7"
    assert got[b"x-forwarded-proto"] == b"http"
    assert got[b"x-forwarded-port"] == b"80"
    assert got[b"x-forwarded-host"] == b"hub.example.org"


def test_request_drops_hop_by_hop_and_connection_named_headers() -> None:
    headers = [
        (b"Host", b"h"),
        (b"X-Secret-Hop", b"1"),  # named by Connection *after* it appeared
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Authorization", b"Basic abc"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-T"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"X-Kept", b"yes"),
    ]
    got = _headers(_request(headers))
    for name in (b"connection", b"keep-alive", b"x-secret-hop", b"proxy-authorization", b"te",
                 b"trailer", b"upgrade", b"proxy-connection"):
        assert name not in got
    assert got[b"x-kept"] == b"yes"


def test_forwarded_headers_append_and_port_from_host() -> None:
    headers = [
        (b"Host", b"hub.example.org:8443"),
        (b"X-Forwarded-For", b"1.2.3.4"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"public.example.org"),
    ]
    got = _headers(_request(headers, _fwd(b"https")))
    assert got[b"x-forwarded-for"] == b"1.2.3.4, 10.0.0.7"
    assert got[b"x-forwarded-proto"] == b"https, https"
    assert got[b"x-forwarded-port"] == b"8443"
    assert got[b"x-forwarded-host"] == b"public.example.org"


def test_forwarded_rendering_is_cached_per_host() -> None:
    forwarded = _fwd()
    first = _headers(_request([(b"Host", b"a.example:81")], forwarded))
    again = _headers(_request([(b"Host", b"a.example:81")], forwarded))
    other = _headers(_request([(b"Host", b"b.example")], forwarded))
    spoofed = _headers(_request([(b"Host", b"b.example"), (b"X-Forwarded-For", b"6.6.6.6")],
                                forwarded))
    assert first == again and first[b"x-forwarded-port"] == b"81"
    assert other[b"x-forwarded-host"] == b"b.example" and other[b"x-forwarded-port"] == b"80"
    assert spoofed[b"x-forwarded-for"] == b"6.6.6.6, 10.0.0.7"
    assert _headers(_request([(b"Host", b"b.example")], forwarded)) == other


def test_request_facts() -> None:
    facts = RequestHeaders.of([(b"HOST", b" h "), (b"Transfer-Encoding", b"chunked"),
                               (b"Expect", b"100-Continue"), (b"Upgrade", b"WebSocket"),
                               (b"Content-Type", b"text/plain")])
    assert facts.host == b"h" and facts.host_count == 1 and facts.count == 5
    assert facts.chunked and not facts.other_coding
    assert facts.expect_continue and facts.websocket and not facts.content_length
    gzip = RequestHeaders.of([(b"Transfer-Encoding", b"gzip, chunked")])
    assert gzip.chunked and gzip.other_coding
    assert RequestHeaders.of([(b"Content-Length", b"3")]).content_length


def test_request_framing_websocket_and_missing_host() -> None:
    chunked = request_head(b"POST", b"/u", RequestHeaders.of([(b"Transfer-Encoding", b"chunked")]),
                           target=TARGET, forwarded=_fwd())
    got = _headers(chunked)
    assert got[b"transfer-encoding"] == b"chunked"
    assert got[b"host"] == b"127.0.0.1:9000"  # an HTTP/1.0 client sent none
    ws = _headers(_request([(b"Host", b"h"), (b"Connection", b"Upgrade"),
                            (b"Upgrade", b"websocket"), (b"Sec-WebSocket-Key", b"k")]))
    assert ws[b"connection"] == b"Upgrade" and ws[b"upgrade"] == b"websocket"
    assert ws[b"sec-websocket-key"] == b"k"


def test_target_base_path_is_prepended() -> None:
    head = _request([(b"Host", b"h")], target=parse_target("http://127.0.0.1:9000/prefix/"),
                    url=b"/user/a")
    assert _lines(head)[0] == b"GET /prefix/user/a HTTP/1.1"


def test_response_head_framing_and_connection() -> None:
    upstream = ResponseHeaders.of([
        (b"Content-Type", b"text/plain"), (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"keep-alive, X-Hop"), (b"Keep-Alive", b"timeout=5"), (b"X-Hop", b"1"),
        (b"Proxy-Authenticate", b"Basic"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
    ])
    assert upstream.chunked and not upstream.content_length
    head = response_head(200, upstream, chunked=True, keep_alive=True, http10=False)
    lines = _lines(head)
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert lines.count(b"Transfer-Encoding: chunked") == 1
    assert [line for line in lines if line.startswith(b"Set-Cookie")] == [
        b"Set-Cookie: a=1", b"Set-Cookie: b=2"]
    for dropped in (b"keep-alive", b"connection", b"x-hop", b"proxy-authenticate"):
        assert not any(line.lower().startswith(dropped) for line in lines)
    closing = _headers(response_head(404, ResponseHeaders(), chunked=False, keep_alive=False,
                                     http10=False))
    assert closing[b"connection"] == b"close"
    old = _headers(response_head(200, ResponseHeaders(), chunked=False, keep_alive=True,
                                 http10=True))
    assert old[b"connection"] == b"keep-alive"
    assert ResponseHeaders.of([(b"content-length", b"3")]).content_length


def test_switching_protocols_keeps_upgrade_headers() -> None:
    upstream = ResponseHeaders.of([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                                   (b"Sec-WebSocket-Accept", b"x")])
    got = _headers(response_head(101, upstream, chunked=False, keep_alive=True, http10=False,
                                 upgrade=True))
    assert got[b"upgrade"] == b"websocket" and got[b"connection"] == b"Upgrade"
    assert got[b"sec-websocket-accept"] == b"x"


def test_small_helpers() -> None:
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert interim_head(100, ResponseHeaders()) == b"HTTP/1.1 100 Continue\r\n\r\n"
    hints = interim_head(103, ResponseHeaders.of([(b"Link", b"</a.css>; rel=preload")]))
    assert hints == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
