"""Base class of every REST API handler: JSON in, JSON out, one error shape.

Errors are always ``{"status": N, "message": "..."}``; a client never sees a traceback.
Cookie-authenticated calls (the browser) must carry the XSRF token on every method and a JSON
(or no) content type; token-authenticated calls need neither.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

# orjson encodes a 200-user page about 12x faster than json.dumps (compact, UTF-8 as is).
from orjson import dumps as _dumps
from tornado import web

from hub.db.database import is_outage
from hub.handlers.base import BaseHandler, HubError, database_unavailable
from hub.handlers.errors import write_json_error
from hub.services import scopes as sc

JSON_TYPES = ("application/json", "")
#: Most of a body read from a caller without valid credentials (or refused) before answering.
UNKNOWN_CALLER_DRAIN = 64 * 1024



@web.stream_request_body
class APIHandler(BaseHandler):
    """JSON handlers under ``/hub/api``.

    Bodies are streamed in so an oversized one is refused (413) without being held in memory:
    a declared ``Content-Length`` over the limit is refused before reading, and a chunked body
    stops being kept once it passes the limit.
    """

    _too_large = False
    _deferred_error: HubError | None = None

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")

    def compute_etag(self) -> str | None:
        return None  # answers are no-store: hashing every body would be wasted work

    def prepare(self) -> None:
        limit = self.hub.config.api_body_limit
        length = self.request.headers.get("Content-Length", "")
        declared = int(length) if length.isdigit() else None
        self._too_large = declared is not None and declared > limit
        # Filled in place by data_received(); handlers read self.request.body as usual.
        self.request.body = bytearray()
        try:
            self._authorize_request(length)
        except HubError as e:
            # Answered only once the (bounded) body has been read, by the method's guard (see
            # _after_body): closing a socket with unread data makes the kernel send a reset,
            # which can destroy the response in flight.
            self._deferred_error = e
        except Exception as e:
            if not is_outage(e):
                raise
            self._deferred_error = database_unavailable(self, e)  # the same, for a 503
        # An over-long body is drained (discarded) so that the 413 still arrives; but only for
        # a caller we know: anyone else gets at most a small body read before the answer.
        known = self.identity is not None and self._deferred_error is None
        drain = 64 * limit if known else min(limit, UNKNOWN_CALLER_DRAIN)
        if declared is not None and declared > drain:
            raise self._deferred_error or HubError(413, f"Request body larger than {limit} bytes")
        if self.request.connection is not None:
            self.request.connection.set_max_body_size(drain)  # type: ignore[attr-defined]

    def _after_body(self) -> None:
        """The checks that must wait for the body; every HTTP method runs this first."""
        if self._deferred_error is not None:
            raise self._deferred_error
        self.check_body_size()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_methods(cls, cls.__dict__)

    def _authorize_request(self, length: str) -> None:
        super().prepare()
        if self.identity is not None and self.identity.kind == "cookie":
            if self.request.method in ("GET", "HEAD"):
                self.check_xsrf_cookie()  # the contract requires it on every method
            ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            has_body = length not in ("", "0") or "Transfer-Encoding" in self.request.headers
            if has_body and ctype not in JSON_TYPES:
                raise HubError(400, "Content-Type must be application/json")

    def data_received(self, chunk: bytes) -> None:
        body = self.request.body
        if not isinstance(body, bytearray):  # a subclass's prepare() skipped ours
            body = self.request.body = bytearray(body)
        if len(body) + len(chunk) > self.hub.config.api_body_limit:
            self._too_large = True
            body.clear()
            return
        if not self._too_large:
            body.extend(chunk)

    def check_body_size(self) -> None:
        if self._too_large:
            limit = self.hub.config.api_body_limit
            raise HubError(413, f"Request body larger than {limit} bytes")

    def on_unauthenticated(self) -> None:
        raise HubError(403, "Missing or invalid credentials")

    def check_xsrf_cookie(self) -> None:
        if self.identity is None:
            return  # unauthenticated API calls are refused anyway; nothing to forge
        super().check_xsrf_cookie()

    # --- input -----------------------------------------------------------------------------
    def json_body(self, allowed: dict[str, type | tuple[type, ...]] | None = None,
                  required: tuple[str, ...] = (), default: Any = None) -> Any:
        """Parse the body as a JSON object, checking keys and value types.

        An empty body gives ``default`` (``{}`` when ``allowed`` is given).
        """
        self.check_body_size()
        if not self.request.body.strip():
            if required:
                raise HubError(400, f"Missing JSON body with {', '.join(required)}")
            return {} if allowed is not None and default is None else default
        try:
            data = json.loads(self.request.body.decode("utf-8"))
        except RecursionError:  # the C parser stops cleanly at Python's recursion limit
            raise HubError(400, "Request body is nested too deeply") from None
        except UnicodeDecodeError:
            raise HubError(400, "Request body is not valid UTF-8") from None
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None
        if allowed is None:
            return data
        if not isinstance(data, dict):
            raise HubError(400, "Request body must be a JSON object")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise HubError(400, f"Unknown keys: {', '.join(unknown[:10])}")
        for key, typ in allowed.items():
            if key in data and not _type_ok(data[key], typ):
                raise HubError(400, f"Wrong type for {key!r}")
        missing = [k for k in required if k not in data]
        if missing:
            raise HubError(400, f"Missing keys: {', '.join(missing)}")
        return data

    # --- output ----------------------------------------------------------------------------
    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(_dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        write_json_error(self, status_code, **kwargs)

    # --- authorization ---------------------------------------------------------------------
    def require(self, needed: str, res: sc.Resource | None = None) -> None:
        """403 unless the caller holds ``needed`` (on ``res``, for a filtered scope).

        Hiding a resource the caller may not see (404) is the caller's check, made first.
        """
        assert self.identity is not None
        if self.identity.can(needed, res):
            return
        raise HubError(403, f"Action is not authorized with current scopes; requires {needed}")


def _guard_methods(cls: type[APIHandler], names: Mapping[str, Any]) -> None:
    """Make each HTTP method of ``cls`` found in ``names`` run :meth:`APIHandler._after_body`
    before its own code (Tornado calls the method once the streamed body is in)."""
    for verb in cls.SUPPORTED_METHODS:
        method = names.get(verb.lower())
        if callable(method) and not getattr(method, "_guarded", False):
            setattr(cls, verb.lower(), _guarded(method))


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(self: APIHandler, *args: Any, **kwargs: Any) -> Any:
        self._after_body()
        return method(self, *args, **kwargs)

    run._guarded = True  # type: ignore[attr-defined]
    return run


def _type_ok(value: Any, typ: type | tuple[type, ...]) -> bool:
    types = typ if isinstance(typ, tuple) else (typ,)
    if bool not in types and isinstance(value, bool):
        return False  # JSON true is not an int here
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, types)


# Tornado's own methods (405 for those a handler lacks) answer a deferred error first, too.
_guard_methods(APIHandler, {m.lower(): getattr(web.RequestHandler, m.lower())
                            for m in APIHandler.SUPPORTED_METHODS})

