"""The OpenID Connect sign-in pages: ``/hub/oauth_login`` sends the browser to the provider,
``/hub/oauth_callback`` takes it back (see :mod:`hub.services.oidc` for the checks).

``state``, ``nonce``, the PKCE verifier and the ``next`` URL travel in a signed, HttpOnly cookie
scoped to the callback and valid for ten minutes; the callback deletes it, so a replayed
callback URL finds no cookie. Every failure is a 4xx page (503 when the provider cannot be
reached), creates no user, counts towards the login throttle of the client address, and logs the
reason without any code, token or secret.
"""

from __future__ import annotations

import hmac
import logging
import math
from typing import NoReturn

from hub.db.database import transaction
from hub.handlers.base import BaseHandler, HubError, scrub
from hub.services import identity as ident
from hub.services import names, sign_in
from hub.services.auth import AuthUnavailable
from hub.services.oidc import FAILED, LoginRefused, LoginStart, OIDCAuthenticator

log = logging.getLogger(__name__)
STATE_COOKIE = "himalia-oidc-state"
STATE_MAX_AGE_DAYS = 10 / (24 * 60)
UNAVAILABLE = "Sign-in is unavailable right now: the identity provider cannot be reached."


class _OIDCHandler(BaseHandler):
    public = True

    @property
    def oidc(self) -> OIDCAuthenticator:
        authenticator = self.hub.authenticator
        if not isinstance(authenticator, OIDCAuthenticator):
            raise HubError(404, "This hub does not use OpenID Connect sign-in")
        return authenticator

    def callback_url(self) -> str:
        configured = self.hub.config.oidc_callback_url
        if configured:
            return configured
        proto = "https" if self.is_https else "http"
        return f"{proto}://{self.request.host}{self.hub_prefix}oauth_callback"

    def throttle_key(self) -> tuple[str, str]:
        return self.client_ip, "(oidc)"


class OAuthLoginHandler(_OIDCHandler):
    """``GET``: redirect to the provider's authorization endpoint."""

    async def get(self) -> None:
        oidc = self.oidc
        next_url = names.safe_next_url(self.get_argument("next", None), self.hub_prefix + "home")
        wait = self.hub.throttle.retry_after(*self.throttle_key())
        if wait > 0:
            raise HubError(429, "Too many failed attempts. Try again later.",
                           headers={"Retry-After": str(math.ceil(wait))})
        try:
            url, start = await oidc.begin(self.callback_url(), next_url)
        except AuthUnavailable as e:
            log.warning("OpenID Connect sign-in unavailable: %s", scrub(str(e)))
            raise HubError(503, UNAVAILABLE) from None
        self.set_signed_cookie(STATE_COOKIE, start.dumps(), expires_days=STATE_MAX_AGE_DAYS,
                               path=self.hub_prefix + "oauth_callback", httponly=True,
                               samesite="Lax", secure=self.is_https)
        self.redirect(url)


class OAuthCallbackHandler(_OIDCHandler):
    """``GET ?code=…&state=…``: finish the sign-in and start a hub session."""

    async def get(self) -> None:
        oidc = self.oidc
        ip, key = self.throttle_key()
        wait = self.hub.throttle.retry_after(ip, key)
        if wait > 0:
            raise HubError(429, "Too many failed attempts. Try again later.",
                           headers={"Retry-After": str(math.ceil(wait))})
        raw = self.get_signed_cookie(STATE_COOKIE, max_age_days=STATE_MAX_AGE_DAYS)
        self.clear_cookie(STATE_COOKIE, path=self.hub_prefix + "oauth_callback")
        start = LoginStart.loads(raw) if raw else None
        if start is None:
            self._refuse(400, "Your sign-in took too long or was started elsewhere. "
                         "Please sign in again.", "no or invalid state cookie")
        state = self.get_argument("state", "")
        if not hmac.compare_digest(state.encode(), start.state.encode()):
            self._refuse(400, FAILED, "state does not match")
        error = self.get_argument("error", None)
        if error is not None:
            self._refuse(403, "The identity provider did not sign you in.",
                         f"provider answered error={scrub(error, 64)}")
        code = self.get_argument("code", "")
        if not code:
            self._refuse(400, FAILED, "no code")
        try:
            result = await oidc.complete(code, self.callback_url(), start)
        except AuthUnavailable as e:
            log.warning("OpenID Connect sign-in unavailable: %s", scrub(str(e)))
            raise HubError(503, UNAVAILABLE) from None
        except LoginRefused as e:
            self._refuse(e.status, e.message, e.detail)
        try:
            with transaction(self.hub.db) as session:
                user = sign_in.sign_in(session, oidc, result, self.hub.accounts.check_name,
                                       FAILED)
                name = user.name
                session_key = ident.new_session(session, user,
                                                self.hub.config.cookie_max_age_days)
        except sign_in.SignInRefused as e:
            self._refuse(e.status, e.message, f"{scrub(result.name, 64)}: {e.message}")
        self.hub.throttle.succeeded(ip, key)
        self.set_login_cookie(session_key)
        log.info("user %s logged in with OpenID Connect (sub %s) from %s", scrub(name, 64),
                 scrub(result.info.get("sub", "?"), 80), ip)
        self.redirect(start.next_url)

    def _refuse(self, status: int, message: str, detail: str) -> NoReturn:
        ip, key = self.throttle_key()
        self.hub.throttle.failed(ip, key)
        log.warning("OpenID Connect sign-in refused from %s: %s", ip, detail)
        raise HubError(status, message)


routes = [
    (r"oauth_login", OAuthLoginHandler),
    (r"oauth_callback", OAuthCallbackHandler),
]
