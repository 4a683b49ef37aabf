"""``GET /hub/api/authorizations/token/<token>`` — legacy: who owns this token?

Deprecated in JupyterHub (use ``GET /hub/api/user`` with the token instead) but still used by
old services. Any authenticated caller may ask: whoever holds a token can already identify its
owner with it. The answer is the owner's model (a user's, or a service's), trimmed to what the
caller may read but always with ``kind``, ``name`` and, for users, ``groups``. Unknown, revoked
and expired tokens answer 404. The token is part of the path here, so the access log redacts it
(:func:`hub.app.log_request`).
"""

from __future__ import annotations

from hub.api.base import APIHandler
from hub.api.models import service_model, user_model
from hub.db.database import transaction
from hub.db.models import User
from hub.handlers.base import HubError
from hub.services import tokens, users


class TokenOwnerHandler(APIHandler):
    """``GET`` the model of the user or service that owns the token in the path."""

    def _request_summary(self) -> str:
        return f"{self.request.method} .../authorizations/token/[secret]"  # error logs too

    def get(self, token: str) -> None:
        with transaction(self.hub.db) as session:
            tok = tokens.lookup(session, token)
            if tok is None:
                raise HubError(404, "No such token")
            if tok.user_id is None:
                service = self.hub.external_services.get(tok.service_name or "")
                if service is None:
                    raise HubError(404, "No such token")
                self.write_json(service_model(self, service))
                return
            owner = session.get(User, tok.user_id)
            user = users.get(session, owner.name) if owner is not None else None
            if user is None:
                raise HubError(404, "No such token")
            model = user_model(self, user)
            model.setdefault("groups", sorted(g.name for g in user.groups))
        self.write_json(model)


routes = [
    (r"api/authorizations/token/([^/]+)", TokenOwnerHandler),
]
