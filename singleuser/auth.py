"""Log browsers and scripts in through the hub: a Jupyter Server ``IdentityProvider``.

How a request is identified (:meth:`HubIdentityProvider.get_user`):

1. an ``Authorization: token|bearer <t>`` header (scripts; such requests need no XSRF token),
   else the access-token cookie set by the OAuth callback;
2. the token is checked with ``GET <hub api>/user`` (cached, see :mod:`singleuser.hubclient`);
3. the returned ``scopes`` must cover this server's access scopes (CONTRACTS §3 step 4).

Outcomes: no or rejected token → ``None`` (Jupyter Server then redirects HTML GETs to
``<prefix>login`` and answers 403 to everything else, API calls with a JSON body); a valid token
of someone without access → 403 page (or JSON), never a redirect — so another user can't loop
through the hub; hub unreachable and nothing cached → 503. Public endpoints (``GET <prefix>api``,
static files, the login pages) never fail because of identity: they just see no user.

The OAuth dance (CONTRACTS §3), all under the server's prefix:

- ``<prefix>login?next=...`` (:class:`HubLoginHandler`) stores state, the validated next URL and
  a PKCE verifier in a signed state cookie and redirects to the hub's authorize URL;
- ``<prefix>oauth_callback`` (:class:`OAuthCallbackHandler`) checks ``state``, trades the code
  for an access token, checks the token's scopes, stores it in the access-token cookie and
  redirects to the next URL;
- ``<prefix>logout`` (:class:`HubLogoutHandler`) clears the cookie and goes to the hub's logout.

Cookies: the access-token cookie is named after the OAuth client id (``jupyterhub-user-alice``),
the state cookie ``<that>-oauth-state``; both are signed with Jupyter Server's cookie secret,
HttpOnly, SameSite=Lax, ``Secure`` under https, with path = the server's prefix.
"""

from __future__ import annotations

import re
import typing as t

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.base.handlers import JupyterHandler
from tornado import web
from tornado.web import decode_signed_value
from traitlets import Bool

from singleuser.env import HubEnv
from singleuser.hubclient import HubClient, HubUnavailable, OAuthError, UserModel
from singleuser.oauth import (
    LoginState,
    authorize_redirect,
    cookie_name_for,
    has_access,
    safe_next,
)

__all__ = ["HubIdentityProvider", "HubLoginHandler", "HubLogoutHandler", "OAuthCallbackHandler"]

#: Lifetime of the access-token cookie's signature; the hub token may expire sooner.
TOKEN_COOKIE_MAX_AGE_DAYS = 14
#: A login must come back from the hub within this time.
STATE_COOKIE_MAX_AGE_DAYS = 10 / (24 * 60)


def cookie_values(handler: web.RequestHandler, name: str) -> list[str]:
    """Every value the request carries for cookie ``name``, most specific path first.

    On one origin any user server can plant a cookie with our name at path ``/``; the browser
    then sends both, and tornado's ``get_cookie`` would see only one of them. Trying each
    value keeps a planted cookie from breaking our login (SECURITY item 3).
    """
    values = []
    for header in handler.request.headers.get_list("Cookie"):
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                values.append(value)
    return values


def signed_cookie_values(handler: web.RequestHandler, name: str, max_age_days: float) -> list[str]:
    """The values of cookie ``name`` that carry a valid signature of ours, decoded."""
    secret = handler.application.settings["cookie_secret"]
    valid = []
    for raw in cookie_values(handler, name):
        decoded = decode_signed_value(secret, name, raw, max_age_days=max_age_days)
        if decoded is not None:
            valid.append(decoded.decode("utf-8", "replace"))
    return valid


def _oauth_error_code(value: str) -> str:
    """An OAuth ``error`` parameter safe to show and log (RFC 6749 codes are plain words)."""
    return value if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value) else "unknown error"


def _is_public(handler: web.RequestHandler) -> bool:
    """Whether the handler's method for this request is marked ``@allow_unauthenticated``."""
    method = getattr(handler, (handler.request.method or "get").lower(), None)
    return bool(getattr(method, "__allow_unauthenticated", False))


class HubIdentityProvider(IdentityProvider):
    """Identifies users by hub-issued tokens and allows only those the hub granted access.

    :meth:`setup` must be called with the server's :class:`~singleuser.env.HubEnv` and a
    :class:`~singleuser.hubclient.HubClient` before the first request (the application does
    this right after Jupyter Server creates the provider).
    """

    need_token = Bool(False)  # no Jupyter token of our own: the hub authenticates

    _env: HubEnv | None = None
    _client: HubClient | None = None

    def setup(self, env: HubEnv, client: HubClient) -> None:
        """Give the provider its configuration and hub client."""
        self._env = env
        self._client = client

    @property
    def env(self) -> HubEnv:
        """The server's configuration (set by :meth:`setup`)."""
        if self._env is None:
            raise RuntimeError("HubIdentityProvider.setup() was not called")
        return self._env

    @property
    def client(self) -> HubClient:
        """The hub API client (set by :meth:`setup`)."""
        if self._client is None:
            raise RuntimeError("HubIdentityProvider.setup() was not called")
        return self._client

    @property
    def cookie_name_value(self) -> str:
        """Name of the access-token cookie: the OAuth client id, made cookie-safe."""
        return cookie_name_for(self.env.client_id)

    @property
    def state_cookie_name(self) -> str:
        """Name of the cookie holding an OAuth login in progress."""
        return self.cookie_name_value + "-oauth-state"

    def get_cookie_name(self, handler: web.RequestHandler) -> str:
        """The access-token cookie's name (the same for every request)."""
        return self.cookie_name_value

    def get_handlers(self) -> list[tuple[str, object]]:
        """Login, logout and OAuth callback routes, relative to the prefix."""
        env = self.env
        callback = env.oauth_callback_path[len(env.service_prefix) - 1:]
        kwargs = {"provider": self}
        routes: list[t.Any] = [
            (r"/login", HubLoginHandler, kwargs),
            (r"/logout", HubLogoutHandler, kwargs),
            (_route(callback), OAuthCallbackHandler, kwargs),
        ]
        return routes

    def get_token(self, handler: web.RequestHandler) -> str | None:
        """The token of an ``Authorization: token|bearer`` header (never from the URL)."""
        match = self.auth_header_pat.match(handler.request.headers.get("Authorization", ""))
        return match.group(2).strip() if match else None

    def cookie_options_for(self, handler: web.RequestHandler) -> dict[str, t.Any]:
        """Attributes of our cookies: path = prefix, HttpOnly, SameSite=Lax, Secure on https."""
        options: dict[str, t.Any] = {"path": self.env.service_prefix, "httponly": True,
                                     "samesite": "Lax"}
        secure = self.secure_cookie
        if secure is None:
            secure = handler.request.protocol == "https"
        if secure:
            options["secure"] = True
        return options

    def set_token_cookie(self, handler: web.RequestHandler, token: str) -> None:
        """Store a hub access token in the signed access-token cookie (a session cookie)."""
        handler.set_signed_cookie(self.cookie_name_value, token, expires_days=None,
                                  **self.cookie_options_for(handler))

    def get_token_cookie(self, handler: web.RequestHandler) -> str | None:
        """The access token from a validly signed cookie, if any."""
        values = signed_cookie_values(handler, self.cookie_name_value, TOKEN_COOKIE_MAX_AGE_DAYS)
        return values[0] if values else None

    def clear_login_cookie(self, handler: web.RequestHandler) -> None:
        """Forget the access-token cookie."""
        handler.clear_cookie(self.cookie_name_value, path=self.env.service_prefix)

    def user_from_model(self, model: UserModel) -> User:
        """The Jupyter Server user for a hub user (or service) model."""
        name = str(model["name"])
        return User(username=name, name=name, display_name=name)

    async def get_user(self, handler: web.RequestHandler) -> User | None:
        """Identify the request by a hub token (header first, then cookie); see module doc."""
        current = getattr(handler, "_jupyter_current_user", None)
        if current:
            return t.cast(User, current)
        token = self.get_token(handler)
        from_header = bool(token)
        if not token:
            token = self.get_token_cookie(handler)
        if not token:
            return None
        try:
            model = await self.client.whoami(token)
        except HubUnavailable as exc:
            self.log.error("cannot identify a request: %s", exc)
            if _is_public(handler):
                return None
            handler.current_user = None
            raise web.HTTPError(503, "The hub is not reachable; please try again later.",
                                reason="Hub Unavailable") from None
        if model is None:
            if not from_header:
                self.clear_login_cookie(handler)
            return None
        if not has_access(model["scopes"], self.env.access_scopes):
            self.log.warning("%s %s: %s has no access to this server",
                             handler.request.method, handler.request.path, model["name"])
            if _is_public(handler):
                return None
            handler.current_user = None
            raise web.HTTPError(403, "%s may not access this server.", model["name"])
        if from_header:
            # lets Jupyter Server skip XSRF and origin checks, as for its own tokens
            handler._token_authenticated = True  # type: ignore[attr-defined]
        return self.user_from_model(model)

    @property
    def login_available(self) -> bool:
        """There is a login page: it sends the browser to the hub."""
        return True

    @property
    def logout_available(self) -> bool:
        """There is a logout page: it clears our cookie and goes to the hub's logout."""
        return True


def _route(path: str) -> str:
    """A literal URL path as a tornado route pattern."""
    return re.escape(path).replace("\\/", "/")


class _HubAuthHandler(JupyterHandler):
    """Base of the OAuth pages: gets the identity provider from the route table."""

    provider: HubIdentityProvider

    def initialize(self, provider: HubIdentityProvider) -> None:
        """Receive the identity provider (from :meth:`HubIdentityProvider.get_handlers`)."""
        self.provider = provider

    def default_next(self) -> str:
        """Where to land without a usable next URL: ``<prefix><default url>``."""
        env = self.provider.env
        return env.service_prefix + env.default_url.lstrip("/")


class HubLoginHandler(_HubAuthHandler):
    """``GET <prefix>login?next=...``: start an OAuth login with the hub."""

    @allow_unauthenticated
    def get(self) -> None:
        """Redirect to the hub's authorize URL (or straight to next when logged in)."""
        env = self.provider.env
        next_url = safe_next(self.get_argument("next", None), env.service_prefix,
                             self.default_next())
        if self.current_user:
            self.redirect(next_url)
            return
        login = LoginState.new(next_url)
        self.set_signed_cookie(self.provider.state_cookie_name, login.dumps(),
                               expires_days=STATE_COOKIE_MAX_AGE_DAYS,
                               **self.provider.cookie_options_for(self))
        self.redirect(authorize_redirect(env.authorize_url, env.client_id,
                                         env.oauth_callback_url, login))


class OAuthCallbackHandler(_HubAuthHandler):
    """``GET <prefix>oauth_callback?code=...&state=...``: finish an OAuth login."""

    @allow_unauthenticated
    async def get(self) -> None:
        """Check state, exchange the code, check access, set the cookie, go to next."""
        provider, env = self.provider, self.provider.env
        error = self.get_argument("error", "")
        if error:
            raise web.HTTPError(403, "The hub did not authorize this login (%s).",
                                _oauth_error_code(error))
        state = self.get_argument("state", "")
        candidates = signed_cookie_values(self, provider.state_cookie_name,
                                          STATE_COOKIE_MAX_AGE_DAYS)
        logins = [login for login in map(LoginState.loads, candidates)
                  if login is not None and login.matches(state)]
        # single use: whatever happens next, this login attempt is over
        self.clear_cookie(provider.state_cookie_name, path=env.service_prefix)
        if not logins:
            raise web.HTTPError(400, "OAuth state mismatch: the login expired or was started "
                                     "elsewhere. Please reload the page to log in again.")
        login = logins[0]
        code = self.get_argument("code", "")
        if not code:
            raise web.HTTPError(400, "OAuth callback without a code.")
        try:
            token = await provider.client.exchange_code(
                client_id=env.client_id, code=code, redirect_uri=env.oauth_callback_url,
                code_verifier=login.verifier)
            model = await provider.client.whoami(token)
        except OAuthError as exc:
            self.log.warning("OAuth code exchange failed: %s", exc)
            raise web.HTTPError(403, "The hub refused this login; please try again.") from None
        except HubUnavailable as exc:
            self.log.error("OAuth callback: %s", exc)
            raise web.HTTPError(503, "The hub is not reachable; please try again later.",
                                reason="Hub Unavailable") from None
        if model is None:
            raise web.HTTPError(403, "The hub rejected the token it just issued.")
        if not has_access(model["scopes"], env.access_scopes):
            self.log.warning("OAuth login of %s refused: no access to this server", model["name"])
            raise web.HTTPError(403, "%s may not access this server.", model["name"])
        provider.set_token_cookie(self, token)
        self.log.info("%s logged in through the hub", model["name"])
        self.redirect(safe_next(login.next_url, env.service_prefix, self.default_next()))


class HubLogoutHandler(_HubAuthHandler):
    """``GET <prefix>logout``: forget this server's cookie, then log out of the hub."""

    @allow_unauthenticated
    def get(self) -> None:
        """Clear the access-token cookie and redirect to ``<hub>/hub/logout``."""
        self.provider.clear_login_cookie(self)
        env = self.provider.env
        self.redirect(env.hub_host + env.hub_prefix + "logout")
