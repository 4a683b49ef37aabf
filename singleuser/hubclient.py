"""The single-user server's calls to the hub API (CONTRACTS §1-§3), over HTTP only.

- :func:`wait_for_hub` — start-up check: ``GET <api_url>`` without auth must answer 2xx;
  retried with exponential back-off, then :class:`HubUnavailable`.
- :meth:`HubClient.exchange_code` — ``POST <api_url>/oauth2/token`` (form-encoded) → access token.
- :meth:`HubClient.whoami` — ``GET <api_url>/user`` with ``Authorization: token <t>`` → the
  user model with its ``scopes``, or ``None`` when the hub rejects the token. Answers are cached
  in a bounded :class:`TokenCache` (keyed by the token's SHA-256, never the token itself);
  concurrent look-ups of one token share one hub request; while the hub is unreachable a recent
  cached answer is still used, so running servers keep working through a hub restart.
- :meth:`HubClient.post_activity` — ``POST`` an activity report with the server's own token.

Tokens never appear in log messages or exception texts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClient, HTTPClientError, HTTPRequest

__all__ = ["HubClient", "HubUnavailable", "OAuthError", "TokenCache", "wait_for_hub"]

log = logging.getLogger(__name__)

UserModel = dict[str, Any]

USER_AGENT = "himalia-singleuser"


class HubUnavailable(Exception):
    """The hub could not be reached, or answered with a server error."""


class OAuthError(Exception):
    """The hub refused an OAuth code exchange (bad, reused or expired code; wrong client)."""


def _describe(exc: BaseException) -> str:
    """A short description of a failed request, without URLs' secrets (we never put any)."""
    if isinstance(exc, HTTPClientError):
        return f"HTTP {exc.code}"
    return f"{type(exc).__name__}: {exc}"


def wait_for_hub(
    api_url: str,
    *,
    attempts: int = 5,
    first_delay: float = 0.25,
    timeout: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until ``GET api_url`` (no auth) answers 2xx, or raise :class:`HubUnavailable`.

    Tries ``attempts`` times, sleeping ``first_delay`` seconds after the first failure and
    doubling each time; each request times out after ``timeout`` seconds. With the defaults a
    refused connection gives up after about 4 s and a black-holed one after about 14 s.
    """
    client = HTTPClient()
    delay = first_delay
    last = "no attempt made"
    try:
        for attempt in range(1, attempts + 1):
            try:
                client.fetch(
                    HTTPRequest(
                        api_url,
                        headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                        connect_timeout=timeout,
                        request_timeout=timeout,
                        follow_redirects=False,
                    )
                )
                return
            except Exception as exc:  # any failure is "not ready yet"
                last = _describe(exc)
                log.warning("hub API %s not ready (attempt %d/%d): %s",
                            api_url, attempt, attempts, last)
            if attempt < attempts:
                sleep(delay)
                delay *= 2
    finally:
        client.close()
    raise HubUnavailable(f"hub API {api_url} did not answer 2xx after {attempts} attempts "
                         f"(last: {last})")


class TokenCache:
    """A bounded LRU cache of whoami answers with a freshness TTL and a longer stale TTL.

    ``get`` returns an entry younger than ``ttl``; ``get_stale`` one younger than ``stale_ttl``
    (used only while the hub is unreachable). Keys are SHA-256 digests of the tokens.
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        stale_ttl: float = 3600.0,
        max_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, UserModel]] = OrderedDict()

    @staticmethod
    def key(token: str) -> str:
        """The cache key of ``token`` (its SHA-256 hex digest)."""
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self._entries)

    def _lookup(self, token: str, max_age: float) -> UserModel | None:
        key = self.key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored, model = entry
        age = self._clock() - stored
        if age > max_age:
            if age > self.stale_ttl:
                del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return model

    def get(self, token: str) -> UserModel | None:
        """A fresh cached answer for ``token``, or ``None``."""
        return self._lookup(token, self.ttl)

    def get_stale(self, token: str) -> UserModel | None:
        """A cached answer no older than ``stale_ttl``, or ``None``."""
        return self._lookup(token, self.stale_ttl)

    def put(self, token: str, model: UserModel) -> None:
        """Remember ``model`` for ``token``, evicting the least recently used entries."""
        key = self.key(token)
        self._entries[key] = (self._clock(), model)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def discard(self, token: str) -> None:
        """Forget ``token``."""
        self._entries.pop(self.key(token), None)


class HubClient:
    """Asynchronous client for the hub API endpoints the single-user server uses."""

    def __init__(
        self,
        api_url: str,
        api_token: str,
        *,
        timeout: float = 10.0,
        cache: TokenCache | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._api_token = api_token
        self.timeout = timeout
        self.cache = cache if cache is not None else TokenCache()
        self._inflight: dict[str, asyncio.Future[UserModel | None]] = {}

    def _request(self, url: str, *, token: str | None, method: str = "GET",
                 body: str | None = None, content_type: str | None = None) -> HTTPRequest:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token is not None:
            headers["Authorization"] = f"token {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return HTTPRequest(url, method=method, headers=headers, body=body,
                           connect_timeout=self.timeout, request_timeout=self.timeout,
                           follow_redirects=False)

    async def _fetch_json(self, request: HTTPRequest) -> Any:
        """Fetch and decode JSON; ``HTTPClientError`` for 4xx, :class:`HubUnavailable` else."""
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            if exc.code < 500 and exc.code != 599:
                raise
            raise HubUnavailable(f"{request.method} {request.url}: {_describe(exc)}") from None
        except OSError as exc:
            raise HubUnavailable(f"{request.method} {request.url}: {_describe(exc)}") from None
        if not response.body:
            return None
        try:
            return json.loads(response.body)
        except ValueError:
            raise HubUnavailable(f"{request.method} {request.url}: invalid JSON") from None

    async def whoami(self, token: str) -> UserModel | None:
        """The hub's model of ``token``'s owner (with ``scopes``), ``None`` if it is rejected.

        Raises :class:`HubUnavailable` when the hub cannot answer and nothing recent is cached.
        """
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        key = TokenCache.key(token)
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[UserModel | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            model = await self._whoami_uncached(token)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        else:
            future.set_result(model)
            return model
        finally:
            del self._inflight[key]

    async def _whoami_uncached(self, token: str) -> UserModel | None:
        try:
            model = await self._fetch_json(self._request(self.api_url + "/user", token=token))
        except HTTPClientError as exc:
            log.info("hub rejected a token on GET /user: HTTP %s", exc.code)
            self.cache.discard(token)
            return None
        except HubUnavailable:
            stale = self.cache.get_stale(token)
            if stale is None:
                raise
            log.warning("hub unavailable, using a cached identity for %s", stale.get("name"))
            return stale
        if (not isinstance(model, dict) or not isinstance(model.get("name"), str)
                or not isinstance(model.get("scopes"), list)):
            log.warning("hub answered GET /user without a name and a list of scopes")
            return None
        self.cache.put(token, model)
        return model

    async def exchange_code(
        self, *, client_id: str, code: str, redirect_uri: str, code_verifier: str
    ) -> str:
        """Trade an authorization code for an access token (CONTRACTS §3 step 3).

        Raises :class:`OAuthError` when the hub refuses, :class:`HubUnavailable` when it fails.
        """
        body = urlencode({
            "client_id": client_id,
            "client_secret": self._api_token,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        })
        # the client authenticates in the form body only (client_id + client_secret)
        request = self._request(self.api_url + "/oauth2/token", token=None,
                                method="POST", body=body,
                                content_type="application/x-www-form-urlencoded")
        try:
            reply = await self._fetch_json(request)
        except HTTPClientError as exc:
            raise OAuthError(f"hub refused the OAuth code: HTTP {exc.code}") from None
        token = reply.get("access_token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not token:
            raise OAuthError("hub's token response has no access_token")
        return token

    async def post_activity(self, activity_url: str, report: dict[str, Any]) -> None:
        """POST an activity report with the server's own token.

        Raises :class:`HubUnavailable` or ``HTTPClientError`` on failure.
        """
        request = self._request(activity_url, token=self._api_token, method="POST",
                                body=json.dumps(report), content_type="application/json")
        await self._fetch_json(request)
