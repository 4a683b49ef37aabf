"""``/hub/metrics``: access, JupyterHub's metric names and labels, values after real events;
and the metrics' recording logic without sockets."""

from __future__ import annotations

import itertools
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from hub.services.lifecycle import State
from hub.services.metrics import HubMetrics
from tests.hub.apitools import config_hub, err
from tests.hubproc import HubProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

NAMES = (
    "jupyterhub_request_duration_seconds", "jupyterhub_server_spawn_duration_seconds",
    "jupyterhub_server_stop_seconds", "jupyterhub_server_poll_duration_seconds",
    "jupyterhub_proxy_add_duration_seconds", "jupyterhub_proxy_delete_duration_seconds",
    "jupyterhub_proxy_poll_duration_seconds", "jupyterhub_check_routes_duration_seconds",
    "jupyterhub_running_servers", "jupyterhub_total_users", "jupyterhub_active_users",
    "jupyterhub_hub_startup_duration_seconds", "jupyterhub_init_spawners_duration_seconds",
    "himalia_event_loop_lag_seconds",
)


def _parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape(hub: HubProcess, token: str | None = None) -> Samples:
    r = requests.get(hub.url + "hub/metrics", timeout=30,
                     headers={"Authorization": f"token {token or hub.admin_token}"})
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("text/plain")
    return _parse(r.text)


def test_metrics_need_read_metrics(hub: HubProcess) -> None:
    url = hub.url + "hub/metrics"
    err(requests.get(url, timeout=30), 403)
    user, _ = hub.new_user("m")
    err(requests.get(url, timeout=30, headers={"Authorization": f"token {hub.make_token(user)}"}),
        403)
    scoped = hub.make_token("admin", "read:metrics")
    samples = _scrape(hub, scoped)
    names = {name for name, _ in samples}
    for name in NAMES:
        assert any(n.startswith(name) for n in names), name
    # Every status label exists from the start, at zero.
    for status in ("success", "failure", "already-pending", "throttled", "too-many-users"):
        assert ("jupyterhub_server_spawn_duration_seconds_count",
                (("status", status),)) in samples, status
    for period in ("24h", "7d", "30d"):
        assert ("jupyterhub_active_users", (("period", period),)) in samples
    assert _value(samples, "jupyterhub_total_users") >= 2
    assert _value(samples, "jupyterhub_hub_startup_duration_seconds_count") == 1
    assert _value(samples, "jupyterhub_check_routes_duration_seconds_count") >= 1
    # The 403s above were observed, by handler class and code.
    assert _value(samples, "jupyterhub_request_duration_seconds_count", method="GET",
                  handler="hub.api.metrics.MetricsHandler", code="403") >= 2


def test_spawn_stop_and_counts(make_hub: Any, tmp_path: Any) -> None:
    hub = config_hub(make_hub, tmp_path)
    user, _ = hub.new_user("ms")
    assert hub.api("POST", f"/users/{user}/server").status_code in (201, 202)
    hub.wait_for(lambda: hub.api("GET", f"/users/{user}").json()["server"])
    err(hub.api("POST", f"/users/{user}/server"), 400)  # running: not "already-pending"
    hub.api("POST", f"/users/{user}/activity", json={"last_activity": "2026-01-01T00:00:00Z"})
    samples = _scrape(hub)
    spawn = "jupyterhub_server_spawn_duration_seconds"
    assert _value(samples, spawn + "_count", status="success") == 1
    assert _value(samples, spawn + "_sum", status="success") > 0
    assert _value(samples, "jupyterhub_running_servers") == 1
    assert _value(samples, "jupyterhub_proxy_add_duration_seconds_count", status="success") >= 1
    # poll every second (the test hub's interval): the running server was polled
    hub.wait_for(lambda: _value(_scrape(hub), "jupyterhub_server_poll_duration_seconds_count",
                                status="running") >= 1, timeout=15)
    assert hub.api("DELETE", f"/users/{user}/server").status_code in (202, 204)
    hub.wait_for(lambda: not hub.api("GET", f"/users/{user}").json()["server"])
    samples = _scrape(hub)
    assert _value(samples, "jupyterhub_server_stop_seconds_count", status="success") == 1
    assert _value(samples, "jupyterhub_running_servers") == 0
    assert _value(samples, "jupyterhub_proxy_delete_duration_seconds_count",
                  status="success") >= 1
    assert _value(samples, "jupyterhub_init_spawners_duration_seconds_count") == 1


def test_metrics_without_authentication(make_hub: Any, tmp_path: Any) -> None:
    hub = config_hub(make_hub, tmp_path, authenticate_prometheus=False)
    r = requests.get(hub.url + "hub/metrics", timeout=30)
    assert r.status_code == 200
    assert "jupyterhub_total_users" in r.text
    assert hub.api("GET", "/users", token="junk").status_code == 403  # the rest still needs it


def _count(m: HubMetrics, metric: str, **labels: str) -> float:
    value = m.registry.get_sample_value(metric + "_count", labels)
    return value or 0.0


def test_transitions_time_spawns_and_stops() -> None:
    m = HubMetrics()
    key = ("alice", "")
    path = [State.STOPPED, State.REQUESTED, State.STARTING, State.RUNNING, State.STOPPING,
            State.STOPPED]
    for old, new in itertools.pairwise(path):
        m.transition(key, old, new)
    assert _count(m, "jupyterhub_server_spawn_duration_seconds", status="success") == 1
    assert _count(m, "jupyterhub_server_stop_seconds", status="success") == 1
    # a start that fails (or is cancelled) goes through stopping but is no stop
    for old, new in ((State.STOPPED, State.REQUESTED), (State.REQUESTED, State.STARTING),
                     (State.STARTING, State.STOPPING), (State.STOPPING, State.FAILED)):
        m.transition(key, old, new)
    assert _count(m, "jupyterhub_server_spawn_duration_seconds", status="failure") == 1
    assert _count(m, "jupyterhub_server_stop_seconds", status="success") == 1
    # a stop that raised is a failed stop
    m.transition(key, State.RUNNING, State.STOPPING)
    m.stop_failed(key)
    m.transition(key, State.STOPPING, State.STOPPED)
    assert _count(m, "jupyterhub_server_stop_seconds", status="failure") == 1
    # a start resumed after a hub restart has no known beginning: not observed
    m.transition(("bob", ""), State.STARTING, State.RUNNING)
    assert _count(m, "jupyterhub_server_spawn_duration_seconds", status="success") == 1


def test_two_hubs_have_separate_registries() -> None:
    a, b = HubMetrics(), HubMetrics()
    a.refused("throttled")
    assert _count(a, "jupyterhub_server_spawn_duration_seconds", status="throttled") == 1
    assert _count(b, "jupyterhub_server_spawn_duration_seconds", status="throttled") == 0
    a.proxy_request("GET", "http://127.0.0.1:1/api/routes?inactive_since=x", 0.1, True)
    a.proxy_request("GET", "http://127.0.0.1:1/api/routes/user/a", 0.1, True)
    assert a.registry.get_sample_value("jupyterhub_proxy_poll_duration_seconds_count") == 1
