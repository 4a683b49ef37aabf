"""The hub API client and activity reporter, against the fake hub (in-process, real HTTP)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from singleuser.activity import ActivityReporter, activity_report, isoformat
from singleuser.hubclient import (
    HubClient,
    HubUnavailable,
    OAuthError,
    TokenCache,
    wait_for_hub,
)
from singleuser.oauth import LoginState, authorize_redirect
from tests.singleuser.conftest import free_port
from tests.singleuser.fakehub import FakeHub


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_cache_ttl_stale_and_bound() -> None:
    clock = Clock()
    cache = TokenCache(ttl=10, stale_ttl=100, max_size=2, clock=clock)
    cache.put("t1", {"name": "a"})
    assert cache.get("t1") == {"name": "a"}
    clock.now += 11
    assert cache.get("t1") is None
    assert cache.get_stale("t1") == {"name": "a"}
    clock.now += 100
    assert cache.get_stale("t1") is None
    assert len(cache) == 0
    for t in ("t1", "t2", "t3"):
        cache.put(t, {"name": t})
    assert len(cache) == 2
    assert cache.get("t1") is None and cache.get("t3") == {"name": "t3"}
    cache.discard("t3")
    assert cache.get("t3") is None
    assert "t2" not in list(cache._entries)  # keyed by digest, never the token
    assert TokenCache.key("t2") in cache._entries


def test_wait_for_hub_gives_up_with_message() -> None:
    port = free_port()
    sleeps: list[float] = []
    with pytest.raises(HubUnavailable, match=rf"127.0.0.1:{port}/hub/api .*3 attempts"):
        wait_for_hub(f"http://127.0.0.1:{port}/hub/api", attempts=3, sleep=sleeps.append)
    assert sleeps == [0.25, 0.5]


def test_wait_for_hub_succeeds(fake_hub: FakeHub) -> None:
    wait_for_hub(fake_hub.api_url, attempts=1)
    assert ("GET", fake_hub.base_path + "hub/api") in fake_hub.calls


async def test_whoami_caches_and_coalesces(fake_hub: FakeHub) -> None:
    token = fake_hub.add_token("alice", ["access:servers!user=alice"])
    client = HubClient(fake_hub.api_url, "server-token")
    models = await asyncio.gather(*(client.whoami(token) for _ in range(5)))
    assert all(m is not None and m["name"] == "alice" for m in models)
    assert await client.whoami(token) == models[0]
    user_calls = [c for c in fake_hub.calls if c[1].endswith("/hub/api/user")]
    assert len(user_calls) == 1
    assert await client.whoami("not-a-token") is None


async def test_whoami_uses_stale_answer_while_hub_is_down() -> None:
    with FakeHub() as hub:
        token = hub.add_token("alice", ["access:servers!user=alice"])
        clock = Clock()
        client = HubClient(hub.api_url, "x", timeout=2,
                           cache=TokenCache(ttl=1, stale_ttl=60, clock=clock))
        assert await client.whoami(token) is not None
    clock.now += 5  # expired, hub gone: the stale answer keeps the user working
    model = await client.whoami(token)
    assert model is not None and model["name"] == "alice"
    clock.now += 100
    with pytest.raises(HubUnavailable):
        await client.whoami(token)
    with pytest.raises(HubUnavailable):
        await client.whoami("never-seen")


async def test_exchange_code(fake_hub: FakeHub) -> None:
    fake_hub.register_client("jupyterhub-user-alice", "secret", "/cb")
    client = HubClient(fake_hub.api_url, "secret")

    async def get_code(login: LoginState) -> str:
        from tornado.httpclient import AsyncHTTPClient

        url = fake_hub.url + authorize_redirect(fake_hub.base_path + "hub/api/oauth2/authorize",
                                                "jupyterhub-user-alice", "/cb", login)
        response = await AsyncHTTPClient().fetch(url, headers={"X-Fakehub-User": "alice"},
                                                 follow_redirects=False, raise_error=False)
        location = response.headers["Location"]
        return location.split("code=")[1].split("&")[0]

    login = LoginState.new("/")
    code = await get_code(login)
    token = await client.exchange_code(client_id="jupyterhub-user-alice", code=code,
                                       redirect_uri="/cb", code_verifier=login.verifier)
    model = await client.whoami(token)
    assert model is not None and model["name"] == "alice"
    with pytest.raises(OAuthError, match="HTTP 400"):  # codes are single-use
        await client.exchange_code(client_id="jupyterhub-user-alice", code=code,
                                   redirect_uri="/cb", code_verifier=login.verifier)
    code = await get_code(login)
    with pytest.raises(OAuthError):  # wrong PKCE verifier
        await client.exchange_code(client_id="jupyterhub-user-alice", code=code,
                                   redirect_uri="/cb", code_verifier="x" * 50)


def test_activity_report_format() -> None:
    when = datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=UTC)
    assert activity_report("", when) == {
        "servers": {"": {"last_activity": "2024-05-01T12:30:00.123456Z"}},
        "last_activity": "2024-05-01T12:30:00.123456Z",
    }
    cest = timezone(timedelta(hours=2))
    assert isoformat(datetime(2024, 5, 1, 14, 0, tzinfo=cest)) == "2024-05-01T12:00:00Z"
    assert isoformat(datetime(2024, 5, 1, 12, 0)) == "2024-05-01T12:00:00Z"


async def test_activity_reporter_posts_only_new_activity(fake_hub: FakeHub) -> None:
    token = fake_hub.add_token("alice", ["users:activity!user=alice"], kind="server")
    when = datetime.now(UTC)
    reporter = ActivityReporter(HubClient(fake_hub.api_url, token),
                                fake_hub.api_url + "/users/alice/activity", "gpu",
                                lambda: when, interval=60)
    assert await reporter.tick() is True
    assert await reporter.tick() is False  # nothing new
    when += timedelta(seconds=1)
    assert await reporter.tick() is True
    assert [name for name, _ in fake_hub.activity] == ["alice", "alice"]
    assert fake_hub.activity[-1][1]["servers"]["gpu"]["last_activity"] == isoformat(when)

    denied = ActivityReporter(HubClient(fake_hub.api_url, "bad-token"),
                              fake_hub.api_url + "/users/alice/activity", "", lambda: when, 60)
    assert await denied.tick() is False  # logged, retried next time, never raises
    assert denied.last_reported is None


async def test_activity_reporter_periodic() -> None:
    with FakeHub() as hub:
        token = hub.add_token("alice", ["users:activity!user=alice"], kind="server")
        reporter = ActivityReporter(HubClient(hub.api_url, token),
                                    hub.api_url + "/users/alice/activity", "",
                                    lambda: datetime.now(UTC), interval=0.05)
        reporter.start()
        deadline = time.monotonic() + 5
        while len(hub.activity) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        reporter.stop()
        assert len(hub.activity) >= 2
