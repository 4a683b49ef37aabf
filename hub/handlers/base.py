"""The base request handler: identity, XSRF, security headers, templates, errors.

Every handler is authenticated unless its class sets ``public = True``; :func:`hub.app.make_app`
checks this for every route at start-up. The identity comes from ``Authorization: token|bearer``
(API scripts) or from the signed login cookie, which names a server-side login session (so logout
really ends it). Cookie-authenticated requests carry an XSRF token derived from the session.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from http.cookies import CookieError, SimpleCookie
from typing import Any, ClassVar
from urllib.parse import urlencode

from tornado import web

from hub import API_VERSION, __version__
from hub.context import HubContext
from hub.db.database import is_outage, transaction
from hub.services.identity import Identity

log = logging.getLogger(__name__)
COOKIE_NAME = "himalia-session"
#: Pages have no inline code, so a strict policy costs nothing; frame-ancestors stops framing.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


DB_UNAVAILABLE = "The hub's database is unavailable right now; try again in a moment."


class HubError(web.HTTPError):
    """An error whose ``message`` is safe to show the client (log text stays separate)."""

    def __init__(self, status: int, message: str, log_message: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, log_message)
        self.message = message
        self.headers = headers or {}


def database_unavailable(handler: BaseHandler, exc: BaseException) -> HubError:
    """Log a database outage as one line and give the 503 the client should get."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    log.warning("%s %s: the database is unavailable (%s)", handler.request.method,
                scrub(handler.request.path), scrub(first, 200))
    return HubError(503, DB_UNAVAILABLE, headers={"Retry-After": "5"})


class BaseHandler(web.RequestHandler):
    """Shared by pages and the API. Subclasses set ``public`` to skip authentication."""

    public: ClassVar[bool] = False
    hub: HubContext
    identity: Identity | None = None
    _session_key: str | None = None

    def initialize(self, hub: HubContext) -> None:
        self.hub = hub

    # --- headers -------------------------------------------------------------------------
    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        self.set_header("X-JupyterHub-Version", API_VERSION)
        self.clear_header("Server")

    # --- identity ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return str(self.hub.config.base_url)

    @property
    def hub_prefix(self) -> str:
        return self.hub.hub_prefix()

    def _token_from_header(self) -> str | None:
        auth = self.request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        return None

    def _session_keys(self) -> list[str]:
        """Every validly signed session key in the Cookie header(s).

        A user server on the same origin can plant a cookie with our name at path ``/``; the
        browser then sends both. Trying each value means a junk one can neither break login
        nor (unsigned) log anyone in.
        """
        keys: list[str] = []
        for header in self.request.headers.get_list("Cookie"):
            for part in header.split(";"):
                name, _, value = part.strip().partition("=")
                if name != COOKIE_NAME or not value:
                    continue
                try:
                    value = SimpleCookie(f"{COOKIE_NAME}={value}")[COOKIE_NAME].value
                except (CookieError, KeyError):
                    continue
                decoded = web.decode_signed_value(
                    self.hub.cookie_secret, COOKIE_NAME, value,
                    max_age_days=self.hub.config.cookie_max_age_days,
                )
                if decoded:
                    keys.append(decoded.decode("utf-8", "replace"))
        return keys

    def resolve_identity(self) -> Identity | None:
        """The caller, from the identity cache when possible (no database access then)."""
        roles, cache = self.hub.custom_roles, self.hub.identities
        token = self._token_from_header()
        if token is not None:
            found = cache.cached_token(token, roles)
            if found is not None:
                return found
            with transaction(self.hub.db) as session:
                return cache.from_token(session, token, roles)
        keys = self._session_keys()
        for key in keys:
            found = cache.cached_session(key, roles)
            if found is not None:
                self._session_key = key
                return found
        if not keys:
            return None
        with transaction(self.hub.db) as session:
            for key in keys:
                found = cache.from_session(session, key, roles)
                if found is not None:
                    self._session_key = key
                    return found
        return None

    def get_current_user(self) -> Identity | None:
        return self.identity

    def prepare(self) -> None:
        self.identity = self.resolve_identity()
        # XSRF is checked here rather than by Tornado (which checks before prepare()), because
        # the expected token depends on the login session just resolved.
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            self.check_fetch_site()
            self.check_xsrf_cookie()
        if not self.public and self.identity is None:
            self.on_unauthenticated()

    def on_unauthenticated(self) -> None:
        """Pages redirect to the login form; the API answers 403 (see ``APIHandler``)."""
        url = self.hub_prefix + "login?" + urlencode({"next": self.request.uri or ""})
        if self.request.method in ("GET", "HEAD"):
            self.redirect(url)
            raise web.Finish()
        raise HubError(403, "Not logged in")

    def check_fetch_site(self) -> None:
        """Refuse cross-site state-changing requests from browsers outright."""
        if self.request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            raise HubError(403, "Cross-site request refused")

    # --- XSRF bound to the login session ---------------------------------------------------
    def _session_xsrf(self) -> str | None:
        if self._session_key is None:
            return None
        mac = hmac.new(self.hub.cookie_secret, b"xsrf:" + self._session_key.encode(),
                       hashlib.sha256)
        return mac.hexdigest()[:40]

    @property
    def xsrf_token(self) -> bytes:
        bound = self._session_xsrf()
        if bound is not None:
            return bound.encode()
        return super().xsrf_token

    def check_xsrf_cookie(self) -> None:
        if self.identity is not None and self.identity.kind == "token":
            return  # token-authenticated calls are not forgeable by another site
        bound = self._session_xsrf()
        if bound is None:
            super().check_xsrf_cookie()
            return
        submitted = (self.get_argument("_xsrf", None) or self.request.headers.get("X-Xsrftoken")
                     or self.request.headers.get("X-Csrftoken") or "")
        if not hmac.compare_digest(submitted.encode(), bound.encode()):
            raise HubError(403, "XSRF token missing or invalid",
                           log_message="'_xsrf' argument missing or invalid")

    @property
    def client_ip(self) -> str:
        """The client's address, for throttling and logs: the peer's, or, when the peer is our
        proxy (on loopback), the ``X-Forwarded-For`` entry ``trusted_proxy_hops`` from the end
        — the one our proxy appended, never one the client wrote itself."""
        return client_address(self.request.remote_ip or "?",
                              self.request.headers.get_list("X-Forwarded-For"),
                              self.hub.config.trusted_proxy_hops)

    # --- cookies ---------------------------------------------------------------------------
    @property
    def is_https(self) -> bool:
        proto = self.request.headers.get("X-Forwarded-Proto", self.request.protocol)
        return proto.split(",")[0].strip().lower() == "https"

    def set_login_cookie(self, key: str) -> None:
        self.set_signed_cookie(
            COOKIE_NAME, key, expires_days=self.hub.config.cookie_max_age_days,
            path=self.hub_prefix, httponly=True, samesite="Lax", secure=self.is_https,
        )

    def clear_login_cookie(self) -> None:
        self.clear_cookie(COOKIE_NAME, path=self.hub_prefix)

    # --- templates and errors --------------------------------------------------------------
    def template_namespace(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "prefix": self.hub_prefix,
            "static_url": lambda p: self.hub_prefix + "static/" + p,
            "user": self.identity,
            # Only the session-bound token: reading Tornado's xsrf_token here would mint a new
            # login-form cookie on any anonymous page (a favicon 404) and break the next login.
            "xsrf": self._session_xsrf() or "",
            "version": __version__,
        }

    def render_template(self, name: str, **ns: Any) -> str:
        template = self.hub.templates.get_template(name)
        return template.render(**{**self.template_namespace(), **ns})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "message", None) or self._reason
        for name, value in getattr(exc, "headers", {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        try:
            self.finish(self.render_template("error.html", status_code=status_code,
                                             message=message))
        except Exception:  # a broken template must never turn into a traceback page
            log.exception("error page failed to render")
            self.finish(f"<h1>{status_code}</h1>")

    def _handle_request_exception(self, e: BaseException) -> None:
        # A database outage is the client's to retry (503, the usual error shape), and the
        # operator's to see as one line, not a traceback per request.
        if is_outage(e):
            error = database_unavailable(self, e)
            if not self._finished:
                self.send_error(503, exc_info=(HubError, error, None))
            return
        super()._handle_request_exception(e)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            if value.log_message:
                log.warning("%d %s: %s", value.status_code, self._request_summary(),
                            value.log_message % value.args if value.args else value.log_message)
        else:
            log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))

    def _request_summary(self) -> str:
        return f"{self.request.method} {scrub(self.request.path)}"


def scrub(text: str, limit: int = 300) -> str:
    """Make untrusted text safe for one log line: escaped control chars, bounded length."""
    out = text.encode("unicode_escape").decode("ascii", "replace")
    return out if len(out) <= limit else out[:limit] + "…"


def client_address(peer: str, forwarded: list[str], hops: int) -> str:
    """See :attr:`BaseHandler.client_ip`: ``forwarded`` holds every ``X-Forwarded-For``
    header's value, in order."""
    try:
        trusted_peer = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        trusted_peer = False
    chain = [part.strip() for value in forwarded for part in value.split(",") if part.strip()]
    if not trusted_peer or hops <= 0 or len(chain) < hops:
        return peer
    candidate = chain[-hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer
