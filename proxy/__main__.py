"""Command line: ``himalia-proxy [options]`` or ``python -m proxy [options]``.

Flags (``--help`` lists them with defaults), compatible with configurable-http-proxy's common
ones: ``--ip --port --api-ip --api-port --default-target --error-target --ssl-key --ssl-cert
--log-level --keep-alive-timeout --timeout --host-routing``, plus ``--routes-file FILE``
(journal the routes and reload them at start), ``--no-auth`` (allow running without a
token, loopback API only), ``--no-metrics`` (no counting, no ``GET /metrics``) and
``--metrics-no-auth`` (``GET /metrics`` on the API port without the token). The API token
is read from the ``CONFIGPROXY_AUTH_TOKEN`` environment variable;
without it the proxy refuses to start (exit status 2).

Once both ports accept connections, exactly one line is printed to stderr::

    himalia-proxy: listening on http://127.0.0.1:8000, api on http://127.0.0.1:8001

(``https://`` for the public URL with ``--ssl-cert``; IPv6 hosts in brackets). The ports are
the bound ones, so with ``--port 0 --api-port 0`` a parent process learns them from this line.
Its prefix and format are a stable interface. Logs go to stderr as well.

SIGTERM or SIGINT: stop accepting, finish requests in flight (up to 10 s), exit 0.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from .app import run
from .config import LOG_LEVELS, ConfigError, from_args
from .journal import JournalError

__all__ = ["main"]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=LOG_LEVELS[level.lower()],
        format="[%(levelname)1.1s %(asctime)s.%(msecs)03d %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``himalia-proxy``; returns the exit status."""
    try:
        config = from_args(argv, os.environ)
    except ConfigError as exc:
        print(f"himalia-proxy: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)
    try:
        run(config)
    except (JournalError, OSError) as exc:
        logging.getLogger("proxy").critical("Cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
