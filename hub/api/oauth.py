"""OAuth2 endpoints for user servers (CONTRACTS §3): ``api/oauth2/authorize`` and ``token``.

``authorize`` is a browser page: it needs the hub login cookie (else it redirects to the login
form, which comes back here), then redirects to the client with a code — at once for the
server's owner, after a consent form (``POST``, XSRF-checked) for others allowed in, or shows a
403 page. A bad client or ``redirect_uri`` gets a 400 page, never a redirect.

``token`` is server-to-server: public (clients authenticate with their id and secret, in the
form body or as HTTP Basic), no cookie, no XSRF. Its errors are OAuth JSON errors
(``{"error": "invalid_grant", "error_description": ...}``) that also carry the hub's
``status`` and ``message`` keys.
"""

from __future__ import annotations

import json
from typing import Any

from hub.api.base import APIHandler
from hub.handlers.base import BaseHandler, HubError, scrub
from hub.services.identity import Identity
from hub.services.oauth import OAuthFatal, OAuthProvider, OAuthRedirect

#: What each access scope means to the person asked for consent.
SCOPE_TEXT = {
    "access:servers": "Use this server as you",
    "access:services": "Use this service as you",
    "read:users:name": "See your username",
    "read:users:groups": "See the names of your groups",
}


def _provider(handler: BaseHandler) -> OAuthProvider:
    return handler.hub.oauth


class OAuthAuthorizeHandler(BaseHandler):
    """``GET`` decides (redirect, consent page or 403); ``POST`` is the consent form's answer."""

    def _browser_identity(self) -> Identity:
        who = self.identity
        assert who is not None  # BaseHandler.prepare sent anonymous callers to the login form
        if who.kind != "cookie":
            raise HubError(403, "OAuth authorization needs a hub login in this browser.")
        return who

    def _uri(self) -> str:
        # Only the query matters to oauthlib; the consent form posts back to this same URL.
        return self.request.full_url()

    def _redirect_to_client(self, location: str) -> None:
        self.set_header("Cache-Control", "no-store")
        self.redirect(location)

    def _decide(self, approve: bool) -> None:
        who = self._browser_identity()
        provider = _provider(self)
        try:
            auth = provider.check(self._uri())
            decision = provider.decide(auth, who, self.hub.custom_roles)
            if decision.kind == "deny":
                raise HubError(403, f"You may not access the server {decision.target}.",
                               log_message=f"OAuth denied for {scrub(who.name, 64)}")
            if decision.kind == "consent" and not approve:
                self._consent_page(decision.target, decision.scopes, auth.client.description)
                return
            self._redirect_to_client(provider.issue_code(self._uri(), who, decision))
        except OAuthFatal as e:
            raise HubError(400, e.message) from None
        except OAuthRedirect as e:
            self._redirect_to_client(e.location)

    def _consent_page(self, target: str, scopes: tuple[str, ...], description: str) -> None:
        items = [{"scope": s, "text": SCOPE_TEXT.get(s.partition("!")[0], s)} for s in scopes]
        self.set_header("Cache-Control", "no-store")
        self.finish(self.render_template(
            "oauth.html", target=target, description=description, scopes=items,
            action=self.request.uri or "", cancel_url=self.hub_prefix + "home",
        ))

    def get(self) -> None:
        self._decide(approve=False)

    def post(self) -> None:
        # XSRF (bound to the login session) and Sec-Fetch-Site were checked in prepare().
        self._decide(approve=True)


class OAuthTokenHandler(APIHandler):
    """``POST`` exchanges a code for an access token (form-encoded, client authenticated)."""

    public = True

    def prepare(self) -> None:
        # Server-to-server: no cookie identity, no XSRF, no JSON content type. A browser page
        # of another site has no business here either.
        limit = self.hub.config.api_body_limit
        if len(self.request.body) > limit:
            raise HubError(413, f"Request body larger than {limit} bytes")
        self.check_fetch_site()

    def post(self) -> None:
        # oauthlib treats a body it cannot parse as empty (and answers with an OAuth error).
        body = self.request.body.decode("utf-8", "replace")
        headers = dict(self.request.headers.get_all())
        answer_headers, answer, status = _provider(self).token_response(
            self.request.full_url(), body, headers)
        for name, value in answer_headers.items():
            if name.lower() != "content-type":
                self.set_header(name, value)
        self.set_header("Cache-Control", "no-store")
        self.set_status(status)
        self.finish(_with_status(answer, status))


def _with_status(answer: str, status: int) -> str:
    """Add the hub's ``status``/``message`` keys to an OAuth error body (one error shape)."""
    if status < 400:
        return answer
    try:
        data: Any = json.loads(answer)
    except ValueError:
        data = {"error": "server_error"}
    if not isinstance(data, dict):
        data = {"error": "server_error"}
    data["status"] = status
    data["message"] = str(data.get("error_description") or data.get("error") or "error")
    return json.dumps(data)


routes = [
    (r"api/oauth2/authorize", OAuthAuthorizeHandler),
    (r"api/oauth2/token", OAuthTokenHandler),
]
