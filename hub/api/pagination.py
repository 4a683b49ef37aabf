"""``offset``/``limit`` pagination in JupyterHub's format.

With ``Accept: application/jupyterhub-pagination+json`` a list answers
``{"items": [...], "_pagination": {"offset", "limit", "total", "next"}}``; otherwise a bare list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from hub.api.base import APIHandler
from hub.handlers.base import HubError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MEDIA_TYPE = "application/jupyterhub-pagination+json"


@dataclass(frozen=True)
class Page:
    """The requested window."""

    offset: int
    limit: int
    wanted: bool  # the client asked for the paginated envelope


def _int_arg(handler: APIHandler, name: str, default: int) -> int:
    raw = handler.get_argument(name, None)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HubError(400, f"{name} must be an integer") from None
    if value < 0:
        raise HubError(400, f"{name} must not be negative")
    return value


def parse(handler: APIHandler) -> Page:
    offset = _int_arg(handler, "offset", 0)
    limit = _int_arg(handler, "limit", DEFAULT_LIMIT)
    limit = DEFAULT_LIMIT if limit == 0 else min(limit, MAX_LIMIT)
    wanted = MEDIA_TYPE in handler.request.headers.get("Accept", "")
    return Page(offset, limit, wanted)


def respond(handler: APIHandler, page: Page, items: list[Any], total: int) -> None:
    if not page.wanted:
        handler.write_json(items)
        return
    nxt = None
    if page.offset + len(items) < total:
        offset = page.offset + page.limit
        args = {k: v[-1].decode() for k, v in handler.request.query_arguments.items()}
        args.update(offset=str(offset), limit=str(page.limit))
        nxt = {"offset": offset, "limit": page.limit,
               "url": handler.request.path + "?" + urlencode(args)}
    handler.write_json({"items": items, "_pagination": {
        "offset": page.offset, "limit": page.limit, "total": total, "next": nxt}})
