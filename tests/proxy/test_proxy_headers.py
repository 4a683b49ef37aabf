"""Header rewriting between client and target, without sockets."""

from __future__ import annotations

from proxy.headers import (
    Forwarded,
    encode_chunk,
    interim_head,
    request_head,
    response_head,
    scan_request,
    scan_response,
    status_line,
)
from proxy.routes import parse_target

FWD = Forwarded(b"10.0.0.7", b"80", b"http")
TARGET = parse_target("http://127.0.0.1:9000")


def _lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def _headers(head: bytes) -> dict[bytes, bytes]:
    return {k.lower(): v for k, _, v in (line.partition(b": ") for line in _lines(head)[1:])}


def test_request_keeps_end_to_end_headers_and_host() -> None:
    headers = [(b"Host", b"hub.example.org"), (b"Cookie", b"a=b"), (b"Accept", b"*/*")]
    head = request_head(b"GET", b"/user/a/x?y=1", headers, target=TARGET, forwarded=FWD,
                        chunked=False, host=b"hub.example.org")
    assert _lines(head)[0] == b"GET /user/a/x?y=1 HTTP/1.1"
    got = _headers(head)
    assert got[b"host"] == b"hub.example.org"
    assert got[b"cookie"] == b"a=b"
    assert got[b"x-forwarded-for"] == b"10.0.0.7"
    assert got[b"x-forwarded-proto"] == b"http"
    assert got[b"x-forwarded-port"] == b"80"
    assert got[b"x-forwarded-host"] == b"hub.example.org"


def test_request_drops_hop_by_hop_and_connection_named_headers() -> None:
    headers = [
        (b"Host", b"h"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Secret-Hop", b"1"),
        (b"Proxy-Authorization", b"Basic abc"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-T"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"X-Kept", b"yes"),
    ]
    got = _headers(request_head(b"GET", b"/", headers, target=TARGET, forwarded=FWD,
                                chunked=False, host=b"h"))
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
    tls = Forwarded(b"10.0.0.7", b"443", b"https")
    got = _headers(request_head(b"GET", b"/", headers, target=TARGET, forwarded=tls,
                                chunked=False, host=b"hub.example.org:8443"))
    assert got[b"x-forwarded-for"] == b"1.2.3.4, 10.0.0.7"
    assert got[b"x-forwarded-proto"] == b"https, https"
    assert got[b"x-forwarded-port"] == b"8443"
    assert got[b"x-forwarded-host"] == b"public.example.org"


def test_request_framing_websocket_and_missing_host() -> None:
    chunked = request_head(b"POST", b"/u", [(b"Transfer-Encoding", b"chunked")],
                           target=TARGET, forwarded=FWD, chunked=True, host=None)
    got = _headers(chunked)
    assert got[b"transfer-encoding"] == b"chunked"
    assert got[b"host"] == b"127.0.0.1:9000"  # an HTTP/1.0 client sent none
    ws_headers = [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
                  (b"Sec-WebSocket-Key", b"k")]
    ws = _headers(request_head(b"GET", b"/ws", ws_headers, target=TARGET, forwarded=FWD,
                               chunked=False, websocket=True, host=b"h"))
    assert ws[b"connection"] == b"Upgrade" and ws[b"upgrade"] == b"websocket"
    assert ws[b"sec-websocket-key"] == b"k"


def test_target_base_path_is_prepended() -> None:
    target = parse_target("http://127.0.0.1:9000/prefix/")
    head = request_head(b"GET", b"/user/a", [(b"Host", b"h")], target=target, forwarded=FWD,
                        chunked=False, host=b"h")
    assert _lines(head)[0] == b"GET /prefix/user/a HTTP/1.1"


def test_response_head_framing_and_connection() -> None:
    upstream = [(b"Content-Type", b"text/plain"), (b"Transfer-Encoding", b"chunked"),
                (b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5")]
    head = response_head(200, upstream, chunked=True, keep_alive=True, http10=False)
    lines = _lines(head)
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert lines.count(b"Transfer-Encoding: chunked") == 1
    assert not any(line.lower().startswith(b"keep-alive") for line in lines)
    assert not any(line.lower().startswith(b"connection") for line in lines)
    closing = _headers(response_head(404, [], chunked=False, keep_alive=False, http10=False))
    assert closing[b"connection"] == b"close"
    old = _headers(response_head(200, [], chunked=False, keep_alive=True, http10=True))
    assert old[b"connection"] == b"keep-alive"


def test_switching_protocols_keeps_upgrade_headers() -> None:
    upstream = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Accept", b"x")]
    got = _headers(response_head(101, upstream, chunked=False, keep_alive=True, http10=False,
                                 upgrade=True))
    assert got[b"upgrade"] == b"websocket" and got[b"connection"] == b"Upgrade"
    assert got[b"sec-websocket-accept"] == b"x"


def test_scans() -> None:
    facts = scan_request([(b"HOST", b" h "), (b"Transfer-Encoding", b"gzip, chunked"),
                          (b"Expect", b"100-Continue"), (b"Upgrade", b"WebSocket")])
    assert facts.host == b"h" and facts.host_count == 1
    assert facts.chunked and facts.expect_continue and facts.websocket
    assert not facts.content_length
    assert scan_response([(b"content-length", b"3")]) == (True, False)
    assert scan_response([(b"Transfer-Encoding", b"chunked")]) == (False, True)


def test_small_helpers() -> None:
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert interim_head(100, []) == b"HTTP/1.1 100 Continue\r\n\r\n"
