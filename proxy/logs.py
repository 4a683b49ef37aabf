"""Access-log lines for the data path and the API.

One line per request: status, method, path (query dropped — it may carry tokens — and cut to
200 characters), duration in ms and, for the proxy's own errors, why. Request targets are
printable ASCII (the parser refuses anything else), so lines cannot be split or forged.
"""

from __future__ import annotations

import logging

__all__ = ["access_log", "loggable_path"]

MAX_LOGGED_PATH = 200


def loggable_path(url: bytes) -> str:
    """The path of a request-target as it may appear in a log line."""
    path = url.split(b"?", 1)[0]
    if len(path) > MAX_LOGGED_PATH:
        path = path[:MAX_LOGGED_PATH] + b"..."
    return path.decode("ascii", "backslashreplace")


def access_log(
    logger: logging.Logger,
    level: int,
    status: int,
    method: bytes,
    url: bytes,
    ms: float,
    note: str = "",
) -> None:
    """Emit one access line at ``level`` (skipped cheaply when the level is disabled)."""
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "%d %s %s %.1fms%s",
            status,
            method.decode("ascii", "replace"),
            loggable_path(url),
            ms,
            f" ({note})" if note else "",
        )
