"""Login and logout pages.

Failed logins are throttled per address and username (429 with ``Retry-After``); the error
never says which of the two was wrong. ``next=`` accepts only local paths.
"""

from __future__ import annotations

import logging
import math

from hub.db.database import transaction
from hub.handlers.base import BaseHandler, HubError, scrub
from hub.services import identity as ident
from hub.services import names, users

log = logging.getLogger(__name__)
BAD_LOGIN = "Invalid username or password."


class LoginHandler(BaseHandler):
    """``GET`` shows the form; ``POST`` checks it and starts a login session."""

    public = True

    def _next(self) -> str:
        return names.safe_next_url(self.get_argument("next", None), self.hub_prefix + "home")

    def _form(self, status: int = 200, error: str = "", username: str = "") -> None:
        self.set_status(status)
        self.finish(self.render_template("login.html", error=error, username=username,
                                         next=self._next(), xsrf=self.xsrf_token.decode()))

    def get(self) -> None:
        if self.identity is not None:
            self.redirect(self._next())
            return
        self._form()

    async def post(self) -> None:
        raw = self.get_body_argument("username", "")
        password = self.get_body_argument("password", "")
        username = names.normalize_username(raw)[:300]
        ip = self.request.remote_ip or "?"
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
        authenticated = await self.hub.authenticator.authenticate(username, password)
        if authenticated is None:
            self._fail(ip, username, raw)
            return
        self.hub.throttle.succeeded(ip, username)
        with transaction(self.hub.db) as session:
            user = users.get(session, authenticated)
            if user is None:
                if self.hub.authenticator.manages_passwords:
                    raise HubError(403, BAD_LOGIN)  # native accounts are created by admins
                try:
                    user = users.create(session, authenticated,
                                        check=self.hub.accounts.check_name)
                except users.UserError as e:
                    log.warning("login of %s refused: %s", scrub(authenticated, 64), e)
                    raise HubError(403, str(e)) from None
            key = ident.new_session(session, user, self.hub.config.cookie_max_age_days)
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
        if self._session_key is not None:
            with transaction(self.hub.db) as session:
                ident.end_session(session, self._session_key)
        self.clear_login_cookie()
        self.redirect(self.hub_prefix + "login")

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
