"""The proxy's own error responses: a small built-in page, or one from ``--error-target``.

With an error target the proxy does what configurable-http-proxy does: it fetches
``<error-target>/<status>?url=<original request-target, urlencoded>`` (JupyterHub serves those
under ``/hub/error/``) and answers the client with the *original* status, the fetched body
and its ``Content-Type``/``Content-Encoding``. If that fetch fails, takes longer than
``timeout`` seconds or returns more than 1 MiB, the built-in page is used.

Every page carries ``Content-Security-Policy: frame-ancestors 'none'`` and
``X-Content-Type-Options: nosniff``; nothing from the request is reflected in built-in pages.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from http import HTTPStatus
from urllib.parse import urlencode

import httptools

from .headers import status_line
from .routes import Target, parse_target

__all__ = ["ErrorPages"]

log = logging.getLogger(__name__)

MAX_PAGE_BYTES = 1024 * 1024

_MESSAGES = {
    400: "The request could not be understood.",
    404: "Nothing is served at this address.",
    431: "The request headers are too large.",
    501: "The request uses a transfer-coding this server does not support.",
    502: "The server for this address sent an invalid response.",
    503: "The server for this address is not responding. "
    "It may be starting or stopped; try again in a moment.",
}
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{code} {phrase}</title></head>
<body><h1>{code} {phrase}</h1><p>{message}</p></body></html>
"""
_SECURITY_HEADERS = (
    b"Content-Security-Policy: frame-ancestors 'none'\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Cache-Control: no-store\r\n"
)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def render(
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/html; charset=utf-8",
    content_encoding: bytes | None = None,
    keep_alive: bool = False,
    head_only: bool = False,
) -> bytes:
    """A complete error response (head and body)."""
    lines = [
        status_line(status),
        b"Content-Type: %s\r\n" % content_type,
        b"Content-Length: %d\r\n" % len(body),
        _SECURITY_HEADERS,
    ]
    if content_encoding:
        lines.append(b"Content-Encoding: %s\r\n" % content_encoding)
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)


class _PageReader:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_PAGE_BYTES:
            raise ValueError("error page too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class ErrorPages:
    """Builds error responses; see the module docstring for the error-target protocol."""

    def __init__(self, error_target: str | None = None, *, timeout: float = 5.0) -> None:
        self.target: Target | None = parse_target(error_target) if error_target else None
        self.timeout = timeout

    def builtin(self, status: int, *, keep_alive: bool = False, head_only: bool = False) -> bytes:
        """The built-in page for ``status``."""
        phrase = _phrase(status)
        message = _MESSAGES.get(status, "The request failed.")
        page = _PAGE.format(code=status, phrase=phrase, message=message).encode()
        return render(status, page, keep_alive=keep_alive, head_only=head_only)

    async def response(
        self, status: int, url: bytes, *, keep_alive: bool = False, head_only: bool = False
    ) -> bytes:
        """The error response for a request to ``url``, from the error target if possible."""
        if self.target is None:
            return self.builtin(status, keep_alive=keep_alive, head_only=head_only)
        try:
            async with asyncio.timeout(self.timeout):
                reader = await self._fetch(self.target, status, url)
        except (OSError, TimeoutError, ValueError, httptools.HttpParserError) as exc:
            log.warning("Error target unavailable for %d page: %s", status, exc)
            return self.builtin(status, keep_alive=keep_alive, head_only=head_only)
        return render(
            status,
            b"".join(reader.body),
            content_type=reader.headers.get(b"content-type", b"text/html; charset=utf-8"),
            content_encoding=reader.headers.get(b"content-encoding"),
            keep_alive=keep_alive,
            head_only=head_only,
        )

    async def _fetch(self, target: Target, status: int, url: bytes) -> _PageReader:
        if target.scheme == "unix":
            stream, writer = await asyncio.open_unix_connection(target.host)
        else:
            tls = ssl.create_default_context() if target.scheme == "https" else None
            stream, writer = await asyncio.open_connection(target.host, target.port, ssl=tls)
        try:
            query = urlencode({"url": url.decode("latin-1")}).encode()
            writer.write(
                b"GET %s/%d?%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                b"Accept: text/html\r\n\r\n" % (target.base_path, status, query, target.authority)
            )
            reader = _PageReader()
            parser = httptools.HttpResponseParser(reader)
            while not reader.complete:
                data = await stream.read(65536)
                if not data:
                    break
                parser.feed_data(data)
            if not reader.complete and b"content-length" in reader.headers:
                raise ValueError("error page truncated")
            return reader
        finally:
            writer.close()
