"""The proxy's own Prometheus metrics, served at ``GET /metrics`` on the API port.

The data path only bumps plain integers in one :class:`ProxyStats` (an attribute increment per
request: no locks, no label lookups); everything else is read when Prometheus scrapes, by
:class:`ProxyCollector` on a :class:`~prometheus_client.CollectorRegistry` of the proxy's own:

================================================  ================================================
``himalia_proxy_requests_total{code}``            requests answered, by status class (``2xx`` …)
``himalia_proxy_upstream_errors_total``           502/503 answers and responses cut off
``himalia_proxy_active_connections``              client connections open now
``himalia_proxy_websocket_tunnels``               WebSocket tunnels open now
``himalia_proxy_websocket_tunnels_opened_total``  WebSocket tunnels opened
``himalia_proxy_routes``                          routes in the table
================================================  ================================================

``--no-metrics`` turns both the counting and the endpoint off (the benchmark's baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "ProxyCollector", "ProxyStats", "registry_for"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class ProxyStats:
    """Counters the data path bumps; ``requests[n]`` counts answers with status ``n``xx."""

    __slots__ = ("requests", "tunnels_opened", "upstream_errors")

    def __init__(self) -> None:
        self.requests = [0] * 10
        self.upstream_errors = 0
        self.tunnels_opened = 0


class _Connection(Protocol):
    @property
    def tunnelling(self) -> bool: ...


class ProxyCollector(Collector):
    """Reads :class:`ProxyStats`, the open connections and the route count at scrape time."""

    def __init__(self, stats: ProxyStats, connections: Collection[_Connection],
                 routes: Callable[[], int]) -> None:
        self.stats = stats
        self.connections = connections
        self.routes = routes

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        requests = CounterMetricFamily("himalia_proxy_requests", "Requests answered by the "
                                       "proxy, by status class", labels=["code"])
        for index, name in enumerate(_CLASSES, start=1):
            requests.add_metric([name], stats.requests[index])
        yield requests
        yield CounterMetricFamily("himalia_proxy_upstream_errors", "Requests the target failed: "
                                  "502/503 answers and responses cut off",
                                  value=stats.upstream_errors)
        connections = list(self.connections)
        yield GaugeMetricFamily("himalia_proxy_active_connections", "Client connections open",
                                value=len(connections))
        yield GaugeMetricFamily("himalia_proxy_websocket_tunnels", "WebSocket tunnels open",
                                value=sum(1 for c in connections if c.tunnelling))
        yield CounterMetricFamily("himalia_proxy_websocket_tunnels_opened",
                                  "WebSocket tunnels opened", value=stats.tunnels_opened)
        yield GaugeMetricFamily("himalia_proxy_routes", "Routes in the table",
                                value=self.routes())


def registry_for(collector: ProxyCollector) -> Callable[[], bytes]:
    """A function rendering ``collector`` (alone on its own registry) in the text format."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return lambda: generate_latest(registry)
