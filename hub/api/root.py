"""API root: version, info, health, and ``/user`` (who am I)."""

from __future__ import annotations

import sys

from hub import API_VERSION, __version__
from hub.api.base import APIHandler
from hub.api.models import service_model, user_model
from hub.db.database import transaction
from hub.handlers.base import HubError
from hub.services import plugins, users


class RootHandler(APIHandler):
    """``GET /hub/api/`` — the API version, no auth (single-user servers probe it)."""

    public = True

    def get(self) -> None:
        self.write_json({"version": API_VERSION})


class HealthHandler(APIHandler):
    """Liveness probe for load balancers; no auth."""

    public = True

    def get(self) -> None:
        self.write_json({"status": "ok"})

    def head(self) -> None:
        self.set_status(200)


class InfoHandler(APIHandler):
    """``GET /hub/api/info`` — versions, and the authenticator and spawner classes in use
    (``module.QualName``) with the versions of the packages that provide them."""

    def get(self) -> None:
        self.require("read:hub")
        self.write_json({
            "version": API_VERSION,
            "himalia_version": __version__,
            "python": sys.version,
            "sys_executable": sys.executable,
            "authenticator": plugins.describe(type(self.hub.authenticator)),
            "spawner": plugins.describe(self.hub.servers.spawner_class),
        })


class SelfHandler(APIHandler):
    """``GET /hub/api/user`` — the caller's model with scopes, session and token ids."""

    def get(self) -> None:
        assert self.identity is not None
        service = self.hub.external_services.get(self.identity.service or "")
        if self.identity.service is not None:  # a service's token: its own model
            if service is None:
                raise HubError(403, "Missing or invalid credentials")
            model = service_model(self, service)
            model["roles"] = list(service.roles)
        else:
            with transaction(self.hub.db) as session:
                user = users.require(session, self.identity.name)
                model = user_model(self, user, full=True)
        model["scopes"] = sorted(self.identity.scopes)
        model["session_id"] = self.identity.session_id
        model["token_id"] = self.identity.token_id
        self.write_json(model)


routes = [
    (r"api/?", RootHandler),
    (r"api/info", InfoHandler),
    (r"api/health", HealthHandler),
    (r"health", HealthHandler),
    (r"api/user", SelfHandler),
]
