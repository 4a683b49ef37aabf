"""``/hub/api/users/<name>/tokens`` — list, mint, read and revoke API tokens.

The rules (which scopes a new token may have, its longest lifetime) live in
:mod:`hub.services.token_requests`; these handlers parse, authorize, call and answer.
"""

from __future__ import annotations

from typing import Any

from hub.api.base import APIHandler
from hub.db.database import transaction
from hub.db.models import APIToken, User, isoformat
from hub.handlers.base import HubError
from hub.services import scopes as sc
from hub.services import token_requests, tokens, users


def token_model(tok: APIToken, owner: str) -> dict[str, Any]:
    return {
        "id": tokens.public_id(tok),
        "kind": "api_token",
        "user": owner,
        "scopes": list(tok.scopes),
        "roles": [],
        "note": tok.note,
        "created": isoformat(tok.created),
        "expires_at": isoformat(tok.expires_at),
        "last_activity": isoformat(tok.last_activity),
        "session_id": tok.session_id,
        "oauth_client": tok.client_id,
    }


class _TokenBase(APIHandler):
    def _owner(self, user: User | None, name: str, needed: str) -> User:
        """``user`` if the caller may do ``needed`` on their tokens; 404 when the caller may
        not even see the user, else 403."""
        if user is None:
            raise HubError(404, f"No such user: {name}")
        res = sc.Resource(user=user.name, user_groups=frozenset(g.name for g in user.groups))
        assert self.identity is not None
        if not self.identity.can(needed, res):
            if not self.identity.can("read:users:name", res):
                raise HubError(404, f"No such user: {name}")
            raise HubError(403, f"Action is not authorized with current scopes; requires {needed}")
        return user


def _str_list(data: dict[str, Any], key: str) -> list[str] | None:
    values = data.get(key)
    if values is not None and not all(isinstance(v, str) for v in values):
        raise HubError(400, f"{key} must be a list of strings")
    return values


class TokenListHandler(_TokenBase):
    """``GET`` lists a user's tokens; ``POST`` mints one (the secret is shown once)."""

    def get(self, name: str) -> None:
        with transaction(self.hub.db) as session:
            user = self._owner(users.get(session, name), name, "read:tokens")
            rows = token_requests.list_for(session, user)
            self.write_json({"api_tokens": [token_model(t, user.name) for t in rows
                                            if t.kind == "api"],
                             "oauth_tokens": [token_model(t, user.name) for t in rows
                                              if t.kind == "oauth"]})

    def post(self, name: str) -> None:
        data = self.json_body({"expires_in": (int, float), "note": str, "scopes": list,
                               "roles": list})
        expires_in = data.get("expires_in")
        if expires_in is not None and expires_in <= 0:
            raise HubError(400, "expires_in must be positive")
        request = token_requests.TokenRequest(
            scopes=_str_list(data, "scopes"), roles=_str_list(data, "roles"),
            note=str(data.get("note") or ""), expires_in=expires_in)
        assert self.identity is not None
        with transaction(self.hub.db) as session:
            user = self._owner(users.get(session, name), name, "tokens")
            try:
                secret, row = token_requests.mint(
                    session, user, self.identity, request, self.hub.custom_roles,
                    float(self.hub.config.token_max_age_days))
            except token_requests.TokenRequestError as e:
                raise HubError(e.status, str(e)) from None
            model = token_model(row, user.name)
        model["token"] = secret
        self.write_json(model, 201)


class TokenHandler(_TokenBase):
    """One token: ``GET`` its model, ``DELETE`` revokes it."""

    def get(self, name: str, token_id: str) -> None:
        with transaction(self.hub.db) as session:
            user = self._owner(users.get(session, name), name, "read:tokens")
            self.write_json(token_model(self._find(token_requests.find(session, user, token_id),
                                                   token_id), user.name))

    def delete(self, name: str, token_id: str) -> None:
        with transaction(self.hub.db) as session:
            user = self._owner(users.get(session, name), name, "tokens")
            session.delete(self._find(token_requests.find(session, user, token_id), token_id))
        self.set_status(204)
        self.finish()

    @staticmethod
    def _find(row: APIToken | None, token_id: str) -> APIToken:
        if row is None:
            raise HubError(404, f"No such token: {token_id}")
        return row


routes = [
    (r"api/users/([^/]+)/tokens", TokenListHandler),
    (r"api/users/([^/]+)/tokens/([^/]+)", TokenHandler),
]
