"""Login and logout pages.

Failed logins are throttled per address and username (429 with ``Retry-After``); the error
never says which of the two was wrong. ``next=`` accepts only local paths.
"""

from __future__ import annotations

import logging
import math

from hub.db.database import transaction
from hub.handlers.base import BaseHandler, HubError, scrub
from hub.handlers.forms import FormHandler
from hub.services import auth_state, names, sign_in
from hub.services import identity as ident
from hub.services.auth import AuthUnavailable

log = logging.getLogger(__name__)
BAD_LOGIN = "Invalid username or password."
UNAVAILABLE = "Sign-in is unavailable right now: the directory cannot be reached."


class LoginHandler(FormHandler):
    """``GET`` shows the form; ``POST`` checks it and starts a login session."""

    public = True

    def _next(self) -> str:
        return names.safe_next_url(self.get_argument("next", None), self.hub_prefix + "home")

    def _form(self, status: int = 200, error: str = "", username: str = "") -> None:
        self.set_status(status)
        authenticator = self.hub.authenticator
        self.finish(self.render_template("login.html", error=error, username=username,
                                         next=self._next(), xsrf=self.xsrf_token.decode(),
                                         login_service=authenticator.login_service,
                                         uses_password=authenticator.uses_password))

    def get(self) -> None:
        if self.identity is not None:
            self.redirect(self._next())
            return
        self._form()

    async def post(self) -> None:
        raw = self.get_body_argument("username", "")
        password = self.get_body_argument("password", "")
        username = names.normalize_username(raw)[:300]
        ip = self.client_ip
        wait = self.hub.throttle.retry_after(ip, username)
        if wait > 0:
            self.set_header("Retry-After", str(math.ceil(wait)))
            log.warning("login throttled for %s from %s", scrub(username, 64), ip)
            self._form(429, "Too many failed attempts. Try again later.", raw[:255])
            return
        try:
            names.validate_username(username)
        except names.NameError_:
            self._fail(ip, username, raw)
            return
        try:
            outcome = await self.hub.authenticator.authenticate(username, password)
        except AuthUnavailable as e:
            log.warning("sign-in unavailable: %s", scrub(str(e)))
            raise HubError(503, UNAVAILABLE) from None
        if outcome is None:
            self._fail(ip, username, raw)
            return
        self.hub.throttle.succeeded(ip, username)
        result = sign_in.as_result(outcome)
        authenticated = result.name
        try:
            with transaction(self.hub.db) as session:
                # native accounts are created by admins: an unknown one is a bad login
                user = sign_in.sign_in(session, self.hub.authenticator, result,
                                       self.hub.accounts.check_name, BAD_LOGIN)
                key = ident.new_session(session, user, self.hub.config.cookie_max_age_days)
        except sign_in.SignInRefused as e:
            log.warning("login of %s refused: %s", scrub(authenticated, 64), e.message)
            raise HubError(e.status, e.message) from None
        self.set_login_cookie(key)
        log.info("user %s logged in from %s", scrub(authenticated, 64), ip)
        self.redirect(self._next())

    def _fail(self, ip: str, username: str, raw: str) -> None:
        self.hub.throttle.failed(ip, username)
        log.warning("failed login for %s from %s", scrub(username, 64), ip)
        self._form(403, BAD_LOGIN, raw[:255])


class LogoutHandler(BaseHandler):
    """Ends the login session on the server (a replayed cookie no longer works)."""

    public = True

    def _logout(self) -> None:
        state = None
        if self._session_key is not None:
            with transaction(self.hub.db) as session:
                if self.identity is not None and self.identity.kind == "cookie":
                    state = auth_state.load(session, self.hub.authenticator.auth_state,
                                            self.identity.name)
                ident.end_session(session, self._session_key)
        self.clear_login_cookie()
        login = self.hub_prefix + "login"
        # e.g. the OpenID Provider's end-session endpoint, which ends its session too
        self.redirect(self.hub.authenticator.logout_url(state, login) or login)

    def get(self) -> None:
        # GET logout is conventional (links); logging out is not a state change an
        # attacker gains from, but we still require same-site navigation.
        if self.request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            raise HubError(403, "Cross-site logout refused")
        self._logout()

    def post(self) -> None:
        self._logout()


routes = [
    (r"login", LoginHandler),
    (r"logout", LogoutHandler),
]
