"""The one JSON error answer: ``{"status": <code>, "message": <text>}`` (CONTRACTS §1).

Written by :class:`hub.api.base.APIHandler` for every API error, and by the pages for requests
that want JSON (API-like paths under ``/user/...``). The message is the exception's
user-facing ``message`` (:class:`hub.handlers.base.HubError`), else the status's reason
phrase; never a traceback or log text.
"""

from __future__ import annotations

import json
from typing import Any

from tornado import web


def write_json_error(handler: web.RequestHandler, status_code: int, **kwargs: Any) -> None:
    """Finish ``handler`` with the JSON error; ``kwargs`` are ``write_error``'s."""
    exc = kwargs.get("exc_info", (None, None, None))[1]
    message = getattr(exc, "message", None)
    if not message:
        message = handler._reason if isinstance(exc, web.HTTPError) else "Internal server error"
    for name, value in getattr(exc, "headers", {}).items():
        handler.set_header(name, value)
    handler.set_header("Content-Type", "application/json; charset=UTF-8")
    handler.finish(json.dumps({"status": status_code, "message": message}))
