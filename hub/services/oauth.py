"""The hub as an OAuth2 provider for user servers (CONTRACTS §3), on ``oauthlib``.

Only the authorization code grant is offered (optionally with PKCE), to confidential clients:
one per user server, registered by :class:`~hub.services.servers.ServerManager`, whose secret
is the server's API token. The protocol rules (exact ``redirect_uri``, single-use short-lived
hashed codes, hashed tokens bound to the login session) live in
:mod:`hub.services.oauth_validator`; this module decides *who* may authorize:

- the server's owner, without a question;
- anyone else holding ``access:servers`` for that server, after a consent page (the built-in
  admin role counts only when ``admin_access`` is configured; it is off by default);
- nobody else (403).

The token then carries the client's access scopes the user holds, plus
:func:`~hub.services.oauth_validator.identify_scopes`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from oauthlib.oauth2.rfc6749 import errors
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from hub.config import Config
from hub.db.database import transaction
from hub.db.models import Server, User
from hub.services import scopes as sc
from hub.services.identity import Identity
from hub.services.oauth_validator import Client, CodeGrantServer, Grantee, HubRequestValidator

log = logging.getLogger(__name__)

FATAL_MESSAGES: dict[type[Exception], str] = {
    errors.MissingClientIdError: "This OAuth request names no client.",
    errors.InvalidClientIdError: "Unknown OAuth client.",
    errors.MismatchingRedirectURIError: "The redirect_uri of this OAuth request does not match "
                                        "the one registered for the client.",
    errors.MissingRedirectURIError: "This OAuth request has no redirect_uri.",
}


class OAuthFatal(Exception):
    """The authorization request cannot be answered with a redirect (bad client or URI).

    ``message`` is safe to show the user; the handler answers with a 400 error page.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OAuthRedirect(Exception):
    """The request failed in a way the client must hear about: redirect to ``location``
    (the client's validated redirect URI, with ``error=...``)."""

    def __init__(self, location: str) -> None:
        super().__init__("redirect to the client with an OAuth error")
        self.location = location


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request: the client and the scopes it asks for."""

    client: Client
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """Whether a user may complete an authorization request, and with which access scopes.

    ``kind``: ``owner`` (approve without asking), ``consent`` (ask first) or ``deny``.
    ``target`` names what the client gives access to, e.g. ``alice/`` or ``alice/work``
    (empty for a client that grants access to nothing).
    """

    kind: Literal["owner", "consent", "deny"]
    client_id: str
    scopes: tuple[str, ...]
    target: str


def holds(user_scopes: set[str], scope: str, owner_groups: frozenset[str] = frozenset()) -> bool:
    """Whether expanded ``user_scopes`` cover ``scope`` (e.g. ``access:servers!server=a/``).

    ``owner_groups`` are the groups of the user that a ``!user=``/``!server=`` filter names,
    so that group-filtered grants (``access:servers!group=g``) count.
    """
    base, flt = sc.split(scope)
    if flt is None:
        return base in user_scopes
    kind, _, value = flt.partition("=")
    if kind == "server":
        res = sc.Resource(user=value.split("/", 1)[0], server=value, user_groups=owner_groups)
    elif kind == "user":
        res = sc.Resource(user=value, user_groups=owner_groups)
    elif kind == "group":
        res = sc.Resource(group=value)
    else:
        return False
    return sc.allows(user_scopes, base, res)


def authorizing_scopes(user: User, custom_roles: dict[str, list[str]],
                       admin_access: bool) -> set[str]:
    """The user's expanded scopes for OAuth decisions.

    The built-in ``admin`` role grants ``access:servers`` on everything; it counts here only
    with ``admin_access``. Without it an admin is treated as a plain user, though roles that
    grant ``access:servers`` explicitly still count. Role scopes are read from the role rows
    (as for API requests), so roles granted while the hub runs count at once.
    """
    base = "admin" if user.admin and admin_access else "user"
    raw = sc.role_scopes([base], custom_roles)
    for role in [*user.roles, *(r for g in user.groups for r in g.roles)]:
        if role.name == "admin" and not admin_access:
            continue
        raw.extend(role.scopes or sc.role_scopes([role.name], custom_roles))
    return sc.expand(raw, owner=user.name)


def target_of(client: Client, server: Server | None) -> tuple[str, str] | None:
    """(owner name, ``owner/server``) of what the client grants access to, if anything.

    From the client's server when it has one, else from its ``access:servers`` scopes.
    """
    if server is not None:
        return server.user.name, f"{server.user.name}/{server.name}"
    for scope in client.allowed_scopes:
        base, flt = sc.split(scope)
        if base != "access:servers" or flt is None:
            continue
        kind, _, value = flt.partition("=")
        if kind == "server" and "/" in value:
            return value.split("/", 1)[0], value
        if kind == "user" and value:
            return value, f"{value}/"
    return None


def decide_for(client: Client, scopes: tuple[str, ...], target: tuple[str, str] | None,
               who: str, held: set[str], owner_groups: frozenset[str]) -> Decision:
    """The decision, from what the caller holds (pure logic; see :meth:`OAuthProvider.decide`).

    A non-owner is granted the requested scopes they hold; without any of the requested
    ``access:*`` scopes they are denied.
    """
    if target is None:  # a client granting access to nothing: identity only, after consent
        return Decision("consent", client.client_id, (), "")
    owner, label = target
    if owner == who:
        return Decision("owner", client.client_id, scopes, label)
    granted = tuple(s for s in scopes if holds(held, s, owner_groups))
    access = [s for s in scopes if sc.split(s)[0].startswith("access:")]
    if not granted or (access and not set(access) & set(granted)):
        return Decision("deny", client.client_id, (), label)
    return Decision("consent", client.client_id, granted, label)


class OAuthProvider:
    """The hub's OAuth2 provider: validates, decides, issues codes and exchanges them.

    Built once at start-up (``hub.oauth = OAuthProvider(hub.db, hub.config)``). In the browser
    flow handlers call :meth:`check`, :meth:`decide`, then :meth:`issue_code` (a redirect
    location); the token endpoint calls :meth:`token_response`.
    """

    def __init__(self, db: sessionmaker[Session], config: Config) -> None:
        self.db = db
        self.admin_access = bool(config.admin_access)
        # Tokens never outlive the login session; this is the ceiling.
        self.validator = HubRequestValidator(db, float(config.cookie_max_age_days) * 86400)
        self.server = CodeGrantServer(self.validator)
        # oauthlib logs codes and tokens at DEBUG; no secret may reach our logs.
        oauthlib_log = logging.getLogger("oauthlib")
        if oauthlib_log.getEffectiveLevel() < logging.INFO:
            oauthlib_log.setLevel(logging.INFO)

    def check(self, uri: str) -> AuthorizationRequest:
        """Validate an authorization request (``uri`` carries its query).

        Raises :class:`OAuthFatal` (show an error page) or :class:`OAuthRedirect` (tell the
        client, at its validated redirect URI).
        """
        try:
            scopes, info = self.server.validate_authorization_request(uri, http_method="GET")
        except errors.FatalClientError as e:
            raise OAuthFatal(_fatal_message(e)) from None
        except errors.OAuth2Error as e:
            raise OAuthRedirect(e.in_uri(e.redirect_uri)) from None
        except ValueError:  # oauthlib refuses a query that is not form-url-encoded
            raise OAuthFatal("Malformed OAuth request.") from None
        return AuthorizationRequest(info["request"].client, tuple(scopes or ()))

    def decide(self, auth: AuthorizationRequest, who: Identity,
               custom_roles: dict[str, list[str]]) -> Decision:
        """May ``who`` let ``auth.client`` act for them, and with which access scopes?"""
        client = auth.client
        with transaction(self.db) as session:
            server = None
            if client.server_id is not None:
                server = session.scalar(
                    select(Server).where(Server.id == client.server_id)
                    .options(selectinload(Server.user).selectinload(User.groups)))
            target = target_of(client, server)
            user = session.scalar(
                select(User).where(User.id == who.user_id)
                .options(selectinload(User.roles), selectinload(User.groups)))
            if user is None:
                return Decision("deny", client.client_id, (), target[1] if target else "")
            held = authorizing_scopes(user, custom_roles, self.admin_access)
            owner_groups = frozenset(g.name for g in server.user.groups) if server else frozenset()
            return decide_for(client, auth.scopes, target, user.name, held, owner_groups)

    def issue_code(self, uri: str, who: Identity, decision: Decision) -> str:
        """Issue a code to ``who``'s login session; returns where to send the browser."""
        if who.session_id is None or decision.kind == "deny":
            raise OAuthFatal("OAuth authorization needs a browser login.")
        grantee = Grantee(who.user_id, who.name, who.session_id, decision.scopes)
        try:
            headers, _, _ = self.server.create_authorization_response(
                uri, http_method="GET", credentials={"user": grantee})
        except errors.FatalClientError as e:
            raise OAuthFatal(_fatal_message(e)) from None
        except ValueError:
            raise OAuthFatal("Malformed OAuth request.") from None
        log.info("OAuth: %s authorized client %s (%s)", who.name, decision.client_id,
                 decision.kind)
        return str(headers["Location"])

    def token_response(self, uri: str, body: str, headers: dict[str, str]
                       ) -> tuple[dict[str, str], str, int]:
        """Answer a token request: (headers, JSON body, status)."""
        try:
            answer: tuple[dict[str, str], str, int] = self.server.create_token_response(
                uri, http_method="POST", body=body, headers=headers)
        except errors.OAuth2Error as e:  # raised before a grant handles it (e.g. a query)
            return {**e.headers, "Cache-Control": "no-store"}, e.json, e.status_code
        except ValueError:  # a body that is not form-url-encoded
            err = errors.InvalidRequestError(description="Malformed token request")
            return {"Cache-Control": "no-store"}, err.json, err.status_code
        return answer


def _fatal_message(e: errors.FatalClientError) -> str:
    return FATAL_MESSAGES.get(type(e), "Invalid OAuth request.")
