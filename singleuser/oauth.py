"""OAuth2 client logic of the single-user server, without I/O.

Everything here is plain functions over strings, tested without sockets:

- PKCE (RFC 7636, ``S256``) verifier/challenge pairs and the random ``state``;
- the state cookie's content (:class:`LoginState`: state, next URL, PKCE verifier);
- the authorize URL the browser is sent to (CONTRACTS §3 step 1);
- the cookie name derived from the OAuth client id;
- next-URL validation (only local paths under the server's prefix, SECURITY item 1);
- the scope check deciding who may use this server (CONTRACTS §3 step 4, SECURITY item 5).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlencode, urlsplit

from singleuser.env import quote_path

__all__ = [
    "LoginState",
    "authorize_redirect",
    "cookie_name_for",
    "has_access",
    "new_pkce_verifier",
    "new_state",
    "pkce_challenge",
    "safe_next",
    "scope_covers",
]

# Characters allowed raw in a cookie name (RFC 6265 token, as accepted by http.cookies).
_COOKIE_NAME_SAFE = "!#$%&'*+-.^_`|~:"


def new_state() -> str:
    """A fresh random OAuth ``state`` value."""
    return secrets.token_urlsafe(24)


def new_pkce_verifier() -> str:
    """A fresh PKCE code verifier: 64 URL-safe characters (RFC 7636 allows 43-128)."""
    return secrets.token_urlsafe(48)


def pkce_challenge(verifier: str) -> str:
    """The ``S256`` code challenge of ``verifier``: unpadded base64url of its SHA-256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class LoginState:
    """What the state cookie remembers between the redirect to the hub and the callback."""

    state: str
    next_url: str
    verifier: str

    @classmethod
    def new(cls, next_url: str) -> LoginState:
        """A login attempt towards ``next_url`` with a fresh state and PKCE verifier."""
        return cls(state=new_state(), next_url=next_url, verifier=new_pkce_verifier())

    def dumps(self) -> str:
        """Serialize for the (signed) state cookie."""
        return json.dumps({"state": self.state, "next": self.next_url, "verifier": self.verifier})

    @classmethod
    def loads(cls, value: str | bytes | None) -> LoginState | None:
        """Inverse of :meth:`dumps`; ``None`` for anything malformed."""
        if not value:
            return None
        try:
            data = json.loads(value)
            state, next_url, verifier = data["state"], data["next"], data["verifier"]
        except (ValueError, TypeError, KeyError):
            return None
        if not all(isinstance(v, str) for v in (state, next_url, verifier)):
            return None
        return cls(state=state, next_url=next_url, verifier=verifier)

    def matches(self, state: str) -> bool:
        """Constant-time comparison of the callback's ``state`` with ours."""
        return bool(state) and hmac.compare_digest(self.state.encode(), state.encode())


def authorize_redirect(
    authorize_url: str, client_id: str, redirect_uri: str, login: LoginState
) -> str:
    """The hub authorize URL with the query of CONTRACTS §3 step 1 (PKCE ``S256``)."""
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "state": login.state,
            "code_challenge": pkce_challenge(login.verifier),
            "code_challenge_method": "S256",
        },
        quote_via=quote,
    )
    return f"{authorize_url}?{query}"


def cookie_name_for(client_id: str) -> str:
    """The access-token cookie's name: the client id, with characters illegal in a cookie
    name (such as ``@``) percent-encoded.

    Client ids are already URL-escaped by the hub (``jupyterhub-user-a%2Db`` stays as it is),
    so they never contain an escape such as ``%40`` for a character left raw, and the mapping
    stays one-to-one.
    """
    return quote(client_id, safe=_COOKIE_NAME_SAFE)


def safe_next(next_url: str | None, prefix: str, default: str) -> str:
    """``next_url`` if it is a local path under ``prefix``, else ``default``.

    Rejects absolute and protocol-relative URLs, backslashes, control characters and paths
    that climb out of the prefix with ``..`` (also when percent-encoded).
    """
    if not next_url or not next_url.startswith("/") or next_url.startswith("//"):
        return default
    if "\\" in next_url or any(ord(c) < 0x20 or ord(c) == 0x7F for c in next_url):
        return default
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc:
        return default
    path = quote_path(parts.path)
    if not (path + "/").startswith(prefix):
        return default
    if any(seg in (".", "..") for seg in unquote(parts.path).split("/")):
        return default
    return next_url


def scope_covers(held: str, required: str) -> bool:
    """Whether holding scope ``held`` satisfies ``required`` under the hub's filter rules.

    An unfiltered scope covers all its filtered forms; ``X!user=U`` covers
    ``X!server=U/<any server>``; otherwise only an exact match counts (group filters cannot
    be resolved here, so they must match exactly).
    """
    if held == required:
        return True
    held_base, _, held_filter = held.partition("!")
    req_base, _, req_filter = required.partition("!")
    if held_base != req_base:
        return False
    if not held_filter:
        return True
    if held_filter.startswith("user=") and req_filter.startswith("server="):
        user = held_filter[len("user="):]
        return bool(user) and req_filter[len("server="):].startswith(user + "/")
    return False


def has_access(held: Iterable[str], access_scopes: Iterable[str]) -> bool:
    """Whether any of the ``held`` scopes covers any of this server's ``access_scopes``."""
    required = list(access_scopes)
    return any(scope_covers(h, r) for h in held if isinstance(h, str) for r in required)
