"""``GET /hub/metrics`` — the hub's Prometheus metrics (CONTRACTS.md §6).

Needs a token (or login) with ``read:metrics`` — admins have it — unless the operator set
``authenticate_prometheus = false`` for a scraper on a private network; then anyone who can
reach the hub may read them. The body is Prometheus' text exposition format; what it holds is
described in :mod:`hub.services.metrics`.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from hub.api.base import APIHandler


class MetricsHandler(APIHandler):
    """``GET`` → the text exposition of the hub's registry."""

    def on_unauthenticated(self) -> None:
        if self.hub.config.authenticate_prometheus:
            super().on_unauthenticated()

    def get(self) -> None:
        if self.hub.config.authenticate_prometheus:
            self.require("read:metrics")
        body = self.hub.metrics.render()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)


routes = [
    (r"metrics", MetricsHandler),
]
