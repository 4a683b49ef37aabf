"""Pages that take a form POST, with a bounded body and a clear answer when it is too big.

Tornado reads a non-streamed body whole before the handler runs, up to the server's limit, and
past it closes the connection with a bare ``400``; behind our proxy, still sending the body,
the browser then gets the proxy's 503. :class:`FormHandler` streams the body instead: it keeps
at most :attr:`FormHandler.form_limit` bytes, reads (and discards) the rest up to
:attr:`FormHandler.drain_limit` so that its 413 page arrives, and refuses a declared length
beyond that at once. The XSRF check, which needs the form's ``_xsrf`` field, waits for the body.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tornado import httputil, web

from hub.handlers.base import BaseHandler, HubError


@web.stream_request_body
class FormHandler(BaseHandler):
    """Base of page handlers whose ``post`` reads a urlencoded (or multipart) form."""

    #: Most bytes of form kept; a bigger form is answered 413.
    form_limit = 64 * 1024
    #: Most bytes read from one request at all (the excess of a too-big form is read and
    #: discarded, never kept, so that the answer arrives: closing with unread data resets the
    #: connection, which can destroy the answer in flight).
    drain_limit = 4 << 20

    _too_large = False
    _xsrf_due = False
    _body_in = False

    def prepare(self) -> None:
        length = self.request.headers.get("Content-Length", "")
        declared = int(length) if length.isdigit() else None
        if declared is not None and declared > self.drain_limit:
            raise HubError(413, "The form is too large")
        self._too_large = declared is not None and declared > self.form_limit
        self.request.body = bytearray()
        if self.request.connection is not None:
            self.request.connection.set_max_body_size(self.drain_limit)  # type: ignore[attr-defined]
        super().prepare()

    def data_received(self, chunk: bytes) -> None:
        body = self.request.body
        assert isinstance(body, bytearray)
        if len(body) + len(chunk) > self.form_limit:
            self._too_large = True
            body.clear()
        elif not self._too_large:
            body.extend(chunk)

    def check_xsrf_cookie(self) -> None:
        if not self._body_in and self.request.method == "POST":
            self._xsrf_due = True  # checked in _after_body, once ``_xsrf`` can be read
            return
        super().check_xsrf_cookie()

    def _after_body(self) -> None:
        """Parse the form, then the checks that needed it. Runs before every ``post``."""
        self._body_in = True
        if self._too_large:
            raise HubError(413, "The form is too large")
        self.request.body = bytes(self.request.body)
        httputil.parse_body_arguments(
            self.request.headers.get("Content-Type", ""), self.request.body,
            self.request.body_arguments, self.request.files, self.request.headers)
        for name, values in self.request.body_arguments.items():
            self.request.arguments.setdefault(name, []).extend(values)
        if self._xsrf_due:
            self.check_xsrf_cookie()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        post = cls.__dict__.get("post")
        if callable(post):
            cls.post = _after_body_first(post)


def _after_body_first(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(self: FormHandler, *args: Any, **kwargs: Any) -> Any:
        self._after_body()
        return method(self, *args, **kwargs)

    return run
