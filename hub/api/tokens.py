"""``/hub/api/users/<name>/tokens`` — list, mint, read and revoke API tokens."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from hub.api.base import APIHandler
from hub.db.database import transaction
from hub.db.models import APIToken, Role, User, isoformat
from hub.handlers.base import HubError
from hub.services import scopes as sc
from hub.services import tokens, users


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
    def _owner(self, session: Any, name: str, needed: str) -> User:
        user = users.get(session, name)
        if user is None:
            raise HubError(404, f"No such user: {name}")
        res = sc.Resource(user=user.name, user_groups=frozenset(g.name for g in user.groups))
        assert self.identity is not None
        if not self.identity.can(needed, res):
            if not self.identity.can("read:users:name", res):
                raise HubError(404, f"No such user: {name}")
            raise HubError(403, f"Action is not authorized with current scopes; requires {needed}")
        return user


class TokenListHandler(_TokenBase):
    """``GET`` lists a user's tokens; ``POST`` mints one (the secret is shown once)."""

    def get(self, name: str) -> None:
        with transaction(self.hub.db) as session:
            user = self._owner(session, name, "read:tokens")
            rows = session.scalars(select(APIToken).where(APIToken.user_id == user.id)
                                   .where(APIToken.kind != "server").order_by(APIToken.id))
            self.write_json({"api_tokens": [token_model(t, user.name) for t in rows
                                            if t.kind == "api"],
                             "oauth_tokens": [token_model(t, user.name) for t in rows
                                              if t.kind == "oauth"]})

    def post(self, name: str) -> None:
        data = self.json_body({"expires_in": (int, float), "note": str, "scopes": list,
                               "roles": list})
        requested = data.get("scopes")
        if requested is not None and not all(isinstance(s, str) for s in requested):
            raise HubError(400, "scopes must be a list of strings")
        expires_in = data.get("expires_in")
        if expires_in is not None and expires_in <= 0:
            raise HubError(400, "expires_in must be positive")
        max_days = float(self.hub.config.token_max_age_days)
        if max_days > 0:
            if expires_in is None or expires_in > max_days * 86400:
                expires_in = max_days * 86400
        with transaction(self.hub.db) as session:
            user = self._owner(session, name, "tokens")
            role_scopes = self._role_scopes(session, data.get("roles"))
            scopes = self._check_scopes(user, requested, role_scopes)
            note = str(data.get("note") or "")[:1000]
            if self.identity and self.identity.name != user.name:
                note = (note + f" (requested by {self.identity.name})").strip()
            secret, row = tokens.create(session, user_id=user.id, scopes=scopes, note=note,
                                        expires_in=expires_in)
            model = token_model(row, user.name)
        model["token"] = secret
        self.write_json(model, 201)

    @staticmethod
    def _role_scopes(session: Any, roles: list[Any] | None) -> list[str] | None:
        """The scopes of the requested roles (built-in or database rows); 400 if unknown."""
        if roles is None:
            return None
        if not all(isinstance(r, str) for r in roles):
            raise HubError(400, "roles must be a list of strings")
        out: list[str] = []
        for name in roles:
            if name in sc.BUILTIN_ROLES:
                out.extend(sc.BUILTIN_ROLES[name])
                continue
            row = session.scalar(select(Role).where(Role.name == name))
            if row is None:
                raise HubError(400, f"No such role: {name[:64]}")
            out.extend(row.scopes or [])
        return out

    def _check_scopes(self, user: User, requested: list[str] | None,
                      role_scopes: list[str] | None) -> list[str]:
        """The new token's scopes: valid, and within both the caller's and the owner's.

        Roles were resolved to their scopes: a token keeps scopes, not roles (JupyterHub 3+).
        Only a request naming neither scopes nor roles gets ``inherit`` (JupyterHub's default
        "token" role: all the owner may do); an explicitly empty list gives no scopes at all.
        """
        if requested is None and role_scopes is None:
            return ["inherit"]
        raw = [*(requested or []), *(role_scopes or [])]
        if not raw:
            return []
        for scope in raw:
            try:
                sc.validate(scope)
            except sc.ScopeError as e:
                raise HubError(400, str(e)) from None
        assert self.identity is not None
        from hub.services.identity import user_scopes

        owner = user_scopes(user, self.hub.custom_roles)
        wanted = sc.expand(raw, owner=user.name)
        if "inherit" in wanted:
            return raw
        allowed = sc.intersect(sc.intersect(wanted, owner), set(self.identity.scopes))
        missing = sorted(wanted - allowed)
        if missing:
            raise HubError(403, "Requested scopes exceed what is allowed: "
                                + ", ".join(missing[:10]))
        return raw


class TokenHandler(_TokenBase):
    """One token: ``GET`` its model, ``DELETE`` revokes it."""

    def _find(self, session: Any, user: User, token_id: str) -> APIToken:
        key = tokens.parse_public_id(token_id)
        row = session.get(APIToken, key) if key is not None else None
        if row is None or row.user_id != user.id or row.kind == "server":
            raise HubError(404, f"No such token: {token_id}")
        return row

    def get(self, name: str, token_id: str) -> None:
        with transaction(self.hub.db) as session:
            user = self._owner(session, name, "read:tokens")
            self.write_json(token_model(self._find(session, user, token_id), user.name))

    def delete(self, name: str, token_id: str) -> None:
        with transaction(self.hub.db) as session:
            user = self._owner(session, name, "tokens")
            session.delete(self._find(session, user, token_id))
        self.set_status(204)
        self.finish()


routes = [
    (r"api/users/([^/]+)/tokens", TokenListHandler),
    (r"api/users/([^/]+)/tokens/([^/]+)", TokenHandler),
]
