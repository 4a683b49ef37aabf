"""OpenID Connect sign-in (authorization code flow with PKCE), the ``oidc`` authenticator.

The flow (handlers in :mod:`hub.handlers.oidc_login`):

1. :meth:`OIDCAuthenticator.begin` — discovery from ``<issuer>/.well-known/openid-configuration``
   (cached for an hour; its ``issuer`` must equal the configured one), then the provider's
   authorization URL with fresh ``state``, ``nonce`` and a PKCE S256 challenge. The caller keeps
   the returned :class:`LoginStart` in a signed, short-lived cookie.
2. :meth:`OIDCAuthenticator.complete` — after the provider redirected back with ``code`` and a
   ``state`` the caller has checked: the code is exchanged at the token endpoint
   (client_secret_post, with the PKCE verifier), the ID token's signature is checked against
   the provider's JWKS (refetched once for an unknown ``kid``: key rotation) with only the
   asymmetric algorithms the provider announces (never ``none`` or HMAC), and its ``iss``,
   ``aud``, ``exp``, ``iat`` and ``nonce`` are checked (:func:`verify_id_token`). Claims come
   from the ID token, and also from userinfo with ``oidc_userinfo``.

Errors: :class:`LoginRefused` (the provider or its answer said no: a 4xx page for the user, the
detail in the log) and :class:`~hub.services.auth.AuthUnavailable` (the provider is unreachable
or broken: a 503). No token, code or secret ever goes into a message.

JOSE is :mod:`joserfc`; HTTP is Tornado's client, with bounded timeouts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session, sessionmaker
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from hub.config import Config, ConfigError
from hub.services.auth import Authenticator, AuthResult, AuthUnavailable

log = logging.getLogger(__name__)
TIMEOUT = 10.0
DISCOVERY_TTL = 3600.0
#: Signature algorithms we accept at all; the provider's announced list narrows it.
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA")
LEEWAY = 30
#: How long before expiry an access token counts as expired (refresh before a spawn).
REFRESH_MARGIN = 60.0


class LoginRefused(Exception):
    """The sign-in failed; ``message`` is for the user, ``detail`` for the log."""

    def __init__(self, message: str, detail: str, status: int = 403) -> None:
        super().__init__(detail)
        self.message, self.detail, self.status = message, detail, status


FAILED = "Sign-in with your identity provider failed. Please try again."


@dataclass(frozen=True)
class LoginStart:
    """What the callback needs to check the provider's answer (kept in a signed cookie)."""

    state: str
    nonce: str
    verifier: str
    next_url: str

    def dumps(self) -> str:
        return json.dumps([self.state, self.nonce, self.verifier, self.next_url])

    @classmethod
    def loads(cls, raw: bytes | str) -> LoginStart | None:
        try:
            state, nonce, verifier, next_url = json.loads(raw)
        except (ValueError, TypeError):
            return None
        if not all(isinstance(x, str) for x in (state, nonce, verifier, next_url)):
            return None
        return cls(state, nonce, verifier, next_url)


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_id_token(token: str, keys: KeySet, *, issuer: str, client_id: str, nonce: str,
                    algorithms: list[str], now: int | None = None) -> dict[str, Any]:
    """The ID token's claims, after checking signature, ``iss``, ``aud`` (and ``azp`` with
    several audiences), ``exp``, ``iat`` and ``nonce``. Raises :class:`joserfc.errors.JoseError`
    (:class:`~joserfc.errors.InvalidKeyIdError` for a key not in ``keys``)."""
    decoded = jwt.decode(token, keys, algorithms=algorithms)
    registry = jwt.JWTClaimsRegistry(
        now=now, leeway=LEEWAY,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        exp={"essential": True}, iat={"essential": True},
        nonce={"essential": True, "value": nonce},
        sub={"essential": True},
    )
    registry.validate(decoded.claims)
    claims = dict(decoded.claims)
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
        raise JoseError("azp does not name this client")
    return claims


def username_from(claims: dict[str, Any], claim: str, normalize: str) -> str | None:
    """The hub username from ``claims`` (None when the claim is missing or not text)."""
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip():
        return None
    name = value.strip().lower()
    if normalize == "local-part":
        name = name.partition("@")[0]
    return name or None


def groups_from(claims: dict[str, Any], claim: str) -> list[str]:
    value = claims.get(claim) if claim else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [g for g in value if isinstance(g, str)]
    return []


class OIDCAuthenticator(Authenticator):
    """Users sign in at an OpenID Provider (see the module docstring)."""

    name = "oidc"
    uses_password = False
    keeps_auth_state = True

    def __init__(self, db: sessionmaker[Session], config: Config | None = None) -> None:
        super().__init__(db, config)
        cfg = self.config
        missing = [n for n in ("oidc_issuer", "oidc_client_id", "oidc_client_secret")
                   if not getattr(cfg, n)]
        if missing:
            raise ConfigError(f"the oidc authenticator needs {', '.join(missing)}")
        if cfg.oidc_username_normalize not in ("lower", "local-part"):
            raise ConfigError("oidc_username_normalize must be 'lower' or 'local-part'")
        if "openid" not in cfg.oidc_scopes:
            raise ConfigError("oidc_scopes must include 'openid'")
        self.issuer = cfg.oidc_issuer.rstrip("/")
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: KeySet | None = None

    @property
    def login_service(self) -> str:
        return self.config.oidc_login_service or urlsplit(self.issuer).hostname or "OpenID"

    async def authenticate(self, username: str, password: str) -> str | AuthResult | None:
        return None  # no password sign-in: users go through the provider

    # --- HTTP ----------------------------------------------------------------------------
    async def _fetch_json(self, url: str, what: str, **kw: Any) -> dict[str, Any]:
        """GET/POST ``url`` and parse a JSON object; AuthUnavailable for network trouble or a
        5xx, LoginRefused for a 4xx (e.g. ``invalid_grant``)."""
        request = HTTPRequest(url, connect_timeout=TIMEOUT, request_timeout=TIMEOUT,
                              headers={"Accept": "application/json", **kw.pop("headers", {})},
                              **kw)
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:
            raise AuthUnavailable(f"{what}: {type(e).__name__}: {e}") from None
        if response.code == 599 or response.code >= 500:
            raise AuthUnavailable(f"{what}: HTTP {response.code}")
        try:
            body = json.loads(response.body or b"null")
        except ValueError:
            body = None
        if response.code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            raise LoginRefused(FAILED, f"{what}: HTTP {response.code} {str(error)[:80]}")
        if not isinstance(body, dict):
            raise AuthUnavailable(f"{what}: not a JSON object")
        return body

    async def discovery(self) -> dict[str, Any]:
        """The provider's metadata (cached for :data:`DISCOVERY_TTL`)."""
        if self._discovery is not None and time.monotonic() - self._discovered_at < DISCOVERY_TTL:
            return self._discovery
        meta = await self._fetch_json(self.issuer + "/.well-known/openid-configuration",
                                      "discovery")
        if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
            raise AuthUnavailable("discovery: the document's issuer is not oidc_issuer")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(meta.get(key), str):
                raise AuthUnavailable(f"discovery: no {key}")
        self._discovery, self._discovered_at = meta, time.monotonic()
        return meta

    async def _keyset(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            meta = await self.discovery()
            jwks = await self._fetch_json(meta["jwks_uri"], "jwks")
            try:
                self._keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as e:
                raise AuthUnavailable(f"jwks: unusable key set ({type(e).__name__})") from None
        return self._keys

    def _algorithms(self, meta: dict[str, Any]) -> list[str]:
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algs = [a for a in offered if a in ASYMMETRIC]
        return algs or ["RS256"]

    # --- the flow --------------------------------------------------------------------------
    async def begin(self, redirect_uri: str, next_url: str) -> tuple[str, LoginStart]:
        """The provider URL to send the browser to, and what to keep until it comes back."""
        meta = await self.discovery()
        start = LoginStart(secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                           secrets.token_urlsafe(48), next_url)
        query = urlencode({
            "response_type": "code", "client_id": self.config.oidc_client_id,
            "redirect_uri": redirect_uri, "scope": " ".join(self.config.oidc_scopes),
            "state": start.state, "nonce": start.nonce,
            "code_challenge": pkce_challenge(start.verifier), "code_challenge_method": "S256",
        })
        endpoint = meta["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", start

    async def complete(self, code: str, redirect_uri: str, start: LoginStart) -> AuthResult:
        """Exchange ``code`` and check what comes back (see the module docstring)."""
        meta = await self.discovery()
        cfg = self.config
        tokens = await self._fetch_json(
            meta["token_endpoint"], "token request", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=urlencode({"grant_type": "authorization_code", "code": code,
                            "redirect_uri": redirect_uri, "code_verifier": start.verifier,
                            "client_id": cfg.oidc_client_id,
                            "client_secret": cfg.oidc_client_secret}))
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise LoginRefused(FAILED, "token response without an id_token")
        claims = await self._verify(id_token, start.nonce, meta)
        if cfg.oidc_userinfo and meta.get("userinfo_endpoint"):
            info = await self._userinfo(meta["userinfo_endpoint"], tokens)
            if info.get("sub") != claims.get("sub"):
                raise LoginRefused(FAILED, "userinfo is about another subject")
            log.debug("claims from userinfo: %s", ", ".join(sorted(info))[:200])
            claims = {**claims, **info}
        name = username_from(claims, cfg.oidc_username_claim, cfg.oidc_username_normalize)
        if name is None:
            raise LoginRefused(FAILED, f"claim {cfg.oidc_username_claim!r} missing or not text")
        groups = groups_from(claims, cfg.oidc_groups_claim)
        return AuthResult(name=name, groups=groups, auth_state=self._state(tokens, claims),
                          info={"sub": str(claims.get("sub"))[:80]})

    async def _verify(self, id_token: str, nonce: str, meta: dict[str, Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {"issuer": str(meta["issuer"]), "client_id":
                              self.config.oidc_client_id, "nonce": nonce,
                              "algorithms": self._algorithms(meta)}
        try:
            try:
                return verify_id_token(id_token, await self._keyset(), **kw)
            except InvalidKeyIdError:  # the provider rotated its keys: fetch them once more
                return verify_id_token(id_token, await self._keyset(refresh=True), **kw)
        except (JoseError, ValueError) as e:
            # The exception text names the failed check, never the token.
            raise LoginRefused(FAILED, f"ID token refused: {type(e).__name__}: "
                               f"{str(e)[:120]}") from None

    async def _userinfo(self, url: str, tokens: dict[str, Any]) -> dict[str, Any]:
        return await self._fetch_json(
            url, "userinfo", headers={"Authorization": f"Bearer {tokens.get('access_token')}"})

    @staticmethod
    def _state(tokens: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
        expires_in = tokens.get("expires_in")
        expires_at = (time.time() + float(expires_in)
                      if isinstance(expires_in, int | float) else None)
        return {"access_token": tokens.get("access_token"),
                "refresh_token": tokens.get("refresh_token"),
                "id_token": tokens.get("id_token"), "token_type": tokens.get("token_type"),
                "expires_at": expires_at, "scope": tokens.get("scope"), "claims": claims}

    async def refresh_auth_state(self, auth_state: dict[str, Any]) -> dict[str, Any] | None:
        expires_at = auth_state.get("expires_at")
        refresh = auth_state.get("refresh_token")
        if not isinstance(expires_at, int | float) or not isinstance(refresh, str):
            return None
        if expires_at - REFRESH_MARGIN > time.time():
            return None
        meta = await self.discovery()
        cfg = self.config
        tokens = await self._fetch_json(
            meta["token_endpoint"], "token refresh", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=urlencode({"grant_type": "refresh_token", "refresh_token": refresh,
                            "client_id": cfg.oidc_client_id,
                            "client_secret": cfg.oidc_client_secret}))
        new = self._state(tokens, dict(auth_state.get("claims") or {}))
        new["refresh_token"] = new["refresh_token"] or refresh
        new["id_token"] = new["id_token"] or auth_state.get("id_token")
        return new

    def logout_url(self, auth_state: dict[str, Any] | None, hub_login_url: str) -> str | None:
        if not self.config.oidc_end_session or self._discovery is None:
            return None
        endpoint = self._discovery.get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        params = {"client_id": self.config.oidc_client_id}
        if auth_state and isinstance(auth_state.get("id_token"), str):
            params["id_token_hint"] = auth_state["id_token"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"
