"""oauthlib glue for the hub's OAuth2 provider: the request validator and the endpoints.

oauthlib speaks the protocol (authorization code grant, PKCE, Bearer tokens, error responses);
:class:`HubRequestValidator` answers its questions from the hub database. The rules it enforces:

- ``redirect_uri`` must equal the client's registered one *exactly*. JupyterHub's clients
  register a local path (``/user/alice/oauth_callback``), which plain oauthlib refuses, so
  :class:`LocalRedirectCodeGrant` replaces its absolute-URI rule with this stricter one.
- PKCE (``S256`` or ``plain``) is optional, but a code issued with a challenge is exchanged
  only with the matching verifier, and a challenge must be well formed.
- Codes live :data:`CODE_LIFETIME` seconds and are stored hashed. The token request that
  presents a code consumes it, whatever happens next; presenting it again fails and revokes
  the token issued from it (remembered in memory for a while, which is enough: codes are short
  lived).
- Clients are confidential: the secret (the server's API token) comes in the form body or as
  HTTP Basic, and its hash is compared in constant time.
- Access tokens are stored hashed, bound to the browser's login session (logout revokes them),
  and expire with that session.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from oauthlib.common import Request
from oauthlib.oauth2 import (
    AuthorizationCodeGrant,
    AuthorizationEndpoint,
    BearerToken,
    RequestValidator,
    TokenEndpoint,
)
from oauthlib.oauth2.rfc6749 import errors
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from hub.db.database import transaction
from hub.db.models import APIToken, LoginSession, OAuthClient, OAuthCode, utcnow
from hub.services import tokens

log = logging.getLogger(__name__)

#: Seconds an authorization code stays valid (a server exchanges it at once).
CODE_LIFETIME = 300
#: How long a consumed code is remembered, to revoke its token if it is presented again.
USED_CODE_MEMORY = 2 * CODE_LIFETIME
USED_CODE_MAX = 10_000
_PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


@dataclass(frozen=True)
class Client:
    """What a request needs from an :class:`OAuthClient` row (oauthlib reads ``client_id``)."""

    client_id: str
    redirect_uri: str
    allowed_scopes: tuple[str, ...]
    server_id: int | None
    description: str


@dataclass(frozen=True)
class Grantee:
    """The browser login a code is issued to, and the access scopes the user granted."""

    user_id: int
    name: str
    session_id: int
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class IssuedCode:
    """A consumed code's data, carried on the oauthlib request through the token exchange."""

    hashed: str
    user_id: int
    session_id: int | None
    scopes: tuple[str, ...]
    code_challenge: str | None
    code_challenge_method: str | None
    redirect_uri: str
    lifetime: int


def identify_scopes(name: str) -> list[str]:
    """Scopes every OAuth token carries: enough for ``GET /hub/api/user`` to identify ``name``."""
    return [f"read:users:name!user={name}", f"read:users:groups!user={name}"]


def parse_basic_auth(header: str) -> tuple[str, str] | None:
    """``Authorization: Basic`` credentials (RFC 6749 §2.3.1: each part form-url-encoded)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))


class HubRequestValidator(RequestValidator):
    """Answers oauthlib's questions for the authorization code grant from the hub database.

    Each method runs its own short transaction. What a later step needs travels on the oauthlib
    request: ``request.client`` (a :class:`Client`), ``request.user`` (a :class:`Grantee` when
    authorizing, a user id when exchanging) and ``request.code_grant`` (a :class:`IssuedCode`).
    """

    def __init__(self, db: sessionmaker[Session], token_lifetime: float) -> None:
        super().__init__()
        self.db = db
        self.token_lifetime = token_lifetime
        # code hash -> (forget after this monotonic time, id of the token issued from it)
        self._used: OrderedDict[str, tuple[float, int | None]] = OrderedDict()

    # --- clients ---------------------------------------------------------------------------
    def load_client(self, client_id: str) -> tuple[Client, str] | None:
        """The client and its secret hash, or None."""
        with transaction(self.db) as session:
            row = session.scalar(select(OAuthClient).where(OAuthClient.identifier == client_id))
            if row is None:
                return None
            client = Client(row.identifier, row.redirect_uri, tuple(row.allowed_scopes or ()),
                            row.server_id, row.description)
            return client, row.secret_hash

    def validate_client_id(self, client_id: str, request: Request, *args: Any,
                           **kwargs: Any) -> bool:
        found = self.load_client(client_id)
        if found is None:
            return False
        request.client = found[0]
        return True

    def validate_redirect_uri(self, client_id: str, redirect_uri: str, request: Request,
                              *args: Any, **kwargs: Any) -> bool:
        client = request.client
        return isinstance(client, Client) and redirect_uri == client.redirect_uri

    def get_default_redirect_uri(self, client_id: str, request: Request, *args: Any,
                                 **kwargs: Any) -> str | None:
        client = request.client
        return client.redirect_uri if isinstance(client, Client) else None

    def validate_response_type(self, client_id: str, response_type: str, client: Client,
                               request: Request, *args: Any, **kwargs: Any) -> bool:
        return response_type == "code"

    def is_pkce_required(self, client_id: str, request: Request) -> bool:
        return False  # optional; a code issued with a challenge still needs its verifier

    def get_default_scopes(self, client_id: str, request: Request, *args: Any,
                           **kwargs: Any) -> list[str]:
        return list(request.client.allowed_scopes)

    def validate_scopes(self, client_id: str, scopes: list[str], client: Client,
                        request: Request, *args: Any, **kwargs: Any) -> bool:
        return set(scopes) <= set(client.allowed_scopes)

    # --- codes -----------------------------------------------------------------------------
    def save_authorization_code(self, client_id: str, code: dict[str, str], request: Request,
                                *args: Any, **kwargs: Any) -> None:
        # The scopes the user granted, not request.scopes: oauthlib refills an empty list
        # with the client's defaults.
        grantee: Grantee = request.user
        scopes = list(dict.fromkeys([*grantee.scopes, *identify_scopes(grantee.name)]))
        challenge = request.code_challenge
        now = utcnow()
        with transaction(self.db) as session:
            session.execute(delete(OAuthCode).where(OAuthCode.expires_at < now))
            session.add(OAuthCode(
                hashed=tokens.hash_token(code["code"]), client_id=client_id,
                user_id=grantee.user_id, session_id=grantee.session_id,
                redirect_uri=request.redirect_uri, scopes=scopes, code_challenge=challenge,
                code_challenge_method=request.code_challenge_method if challenge else None,
                expires_at=now + timedelta(seconds=CODE_LIFETIME),
            ))

    def validate_code(self, client_id: str, code: str, client: Client, request: Request,
                      *args: Any, **kwargs: Any) -> bool:
        """Consume the code if it is this client's; a consumed code coming back is a replay."""
        hashed = tokens.hash_token(code)
        with transaction(self.db) as session:
            row = session.scalar(select(OAuthCode).where(OAuthCode.hashed == hashed))
            if row is None:
                self._replayed(session, hashed, client_id)
                return False
            if row.client_id != client_id:
                log.warning("OAuth code of client %s presented by client %s",
                            row.client_id, client_id)
                return False
            # Atomic consumption: of two racing exchanges only one deletes the row.
            gone = session.execute(delete(OAuthCode).where(OAuthCode.id == row.id))
            if getattr(gone, "rowcount", 0) != 1:
                return False
            self._remember(hashed, None)
            lifetime = self._lifetime(session, row)
            if lifetime is None:
                return False
        request.code_grant = IssuedCode(
            hashed, row.user_id, row.session_id, tuple(row.scopes), row.code_challenge,
            row.code_challenge_method, row.redirect_uri, lifetime)
        request.user = row.user_id
        request.scopes = list(row.scopes)
        return True

    def _lifetime(self, session: Session, row: OAuthCode) -> int | None:
        """Seconds the token bought with this code may live; None if the code is stale (it
        expired, or the browser logged out meanwhile)."""
        now = utcnow()
        if row.expires_at <= now:
            return None
        lifetime = self.token_lifetime
        if row.session_id is not None:
            login = session.get(LoginSession, row.session_id)
            if login is None or login.expires_at <= now:
                return None
            lifetime = min(lifetime, (login.expires_at - now).total_seconds())
        return max(1, int(lifetime))

    def _grant(self, code: str, request: Request) -> IssuedCode | None:
        grant = getattr(request, "code_grant", None)
        if isinstance(grant, IssuedCode) and grant.hashed == tokens.hash_token(code):
            return grant
        return None

    def get_code_challenge(self, code: str, request: Request) -> str | None:
        grant = self._grant(code, request)
        return grant.code_challenge if grant else None

    def get_code_challenge_method(self, code: str, request: Request) -> str | None:
        grant = self._grant(code, request)
        return grant.code_challenge_method if grant else None

    def confirm_redirect_uri(self, client_id: str, code: str, redirect_uri: str | None,
                             client: Client, request: Request, *args: Any,
                             **kwargs: Any) -> bool:
        grant = self._grant(code, request)
        return grant is not None and redirect_uri == grant.redirect_uri

    def invalidate_authorization_code(self, client_id: str, code: str, request: Request,
                                      *args: Any, **kwargs: Any) -> None:
        # Already consumed by validate_code; deleting again keeps this method's promise.
        with transaction(self.db) as session:
            session.execute(delete(OAuthCode).where(OAuthCode.hashed == tokens.hash_token(code)))

    def _remember(self, hashed: str, token_id: int | None) -> None:
        now = time.monotonic()
        self._used[hashed] = (now + USED_CODE_MEMORY, token_id)
        self._used.move_to_end(hashed)
        while self._used and (len(self._used) > USED_CODE_MAX
                              or next(iter(self._used.values()))[0] < now):
            self._used.popitem(last=False)

    def _replayed(self, session: Session, hashed: str, client_id: str) -> None:
        """A consumed code came back: revoke the token it bought (RFC 6749 §4.1.2)."""
        entry = self._used.get(hashed)
        if entry is None or entry[0] < time.monotonic():
            return
        log.warning("OAuth code for client %s presented twice; revoking its token", client_id)
        if entry[1] is not None:
            row = session.get(APIToken, entry[1])
            if row is not None:
                session.delete(row)

    # --- token requests --------------------------------------------------------------------
    def client_authentication_required(self, request: Request, *args: Any,
                                       **kwargs: Any) -> bool:
        return True

    def authenticate_client(self, request: Request, *args: Any, **kwargs: Any) -> bool:
        """Client id and secret from HTTP Basic or the form body (not both, RFC 6749 §2.3)."""
        basic = parse_basic_auth(request.headers.get("Authorization", ""))
        if basic is not None:
            if request.client_secret is not None:
                return False
            client_id, secret = basic
            if request.client_id and request.client_id != client_id:
                return False
        else:
            client_id, secret = request.client_id or "", request.client_secret or ""
        found = self.load_client(client_id) if client_id else None
        expected = found[1] if found else tokens.hash_token("no such client")
        matches = hmac.compare_digest(tokens.hash_token(secret).encode(), expected.encode())
        if found is None or not secret or not matches:
            return False
        request.client = found[0]
        request.client_id = client_id
        return True

    def authenticate_client_id(self, client_id: str, request: Request, *args: Any,
                               **kwargs: Any) -> bool:
        return False  # no public clients

    def validate_grant_type(self, client_id: str, grant_type: str, client: Client,
                            request: Request, *args: Any, **kwargs: Any) -> bool:
        return grant_type == "authorization_code"

    def token_expires_in(self, request: Request) -> int:
        """A token lives as long as the login session it came from (at most the maximum)."""
        grant = getattr(request, "code_grant", None)
        return grant.lifetime if isinstance(grant, IssuedCode) else int(self.token_lifetime)

    def save_bearer_token(self, token: dict[str, Any], request: Request, *args: Any,
                          **kwargs: Any) -> None:
        grant: IssuedCode = request.code_grant
        client: Client = request.client
        with transaction(self.db) as session:
            _, row = tokens.create(
                session, user_id=grant.user_id, kind="oauth", scopes=list(grant.scopes),
                note=f"OAuth: {client.description or client.client_id}"[:255],
                expires_in=token.get("expires_in"), client_id=client.client_id,
                session_id=grant.session_id, secret=token["access_token"],
            )
            token_id = row.id
        self._remember(grant.hashed, token_id)


def check_challenge(request: Request) -> dict[str, Any]:
    """Pre-authorization check: a PKCE challenge, when sent, is well formed (RFC 7636 §4.2)."""
    challenge = request.code_challenge
    if challenge is not None and not _PKCE_CHALLENGE.match(challenge):
        raise errors.InvalidRequestError(
            description="code_challenge must be 43-128 unreserved characters", request=request)
    return {}


class LocalRedirectCodeGrant(AuthorizationCodeGrant):
    """oauthlib's code grant, accepting the relative redirect URIs JupyterHub clients use.

    oauthlib rejects a redirect URI that is not absolute before asking the validator; here the
    URI is matched exactly against the registered one instead, which is stricter than any
    absolute-URI or prefix rule.
    """

    def _handle_redirects(self, request: Request) -> None:
        validator = self.request_validator
        if request.redirect_uri is None:
            request.using_default_redirect_uri = True
            request.redirect_uri = validator.get_default_redirect_uri(request.client_id, request)
            if not request.redirect_uri:
                raise errors.MissingRedirectURIError(request=request)
            return
        request.using_default_redirect_uri = False
        if not validator.validate_redirect_uri(request.client_id, request.redirect_uri,
                                               request):
            raise errors.MismatchingRedirectURIError(request=request)


class CodeGrantServer(AuthorizationEndpoint, TokenEndpoint):
    """oauthlib's ``WebApplicationServer`` reduced to what the hub offers: the authorization
    and token endpoints of the code grant, Bearer tokens, no refresh tokens."""

    def __init__(self, validator: HubRequestValidator) -> None:
        grant = LocalRedirectCodeGrant(validator, refresh_token=False, pre_auth=[check_challenge])
        bearer = BearerToken(validator, token_generator=lambda _req: tokens.new_secret(),
                             expires_in=validator.token_expires_in)
        AuthorizationEndpoint.__init__(self, default_response_type="code",
                                       response_types={"code": grant},
                                       default_token_type=bearer)
        TokenEndpoint.__init__(self, default_grant_type="authorization_code",
                               grant_types={"authorization_code": grant},
                               default_token_type=bearer)
