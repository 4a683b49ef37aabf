"""``/hub/api/services`` — the external services of the ``services`` setting (read-only).

As in JupyterHub the list is a JSON object keyed by service name. Listing needs
``list:services`` (or ``read:services``); one service needs ``read:services:name`` at least, and
its model is trimmed to what the caller may read. Services are configured in the config file
only, so there is no create or delete here. Scope filters do not apply to services.
"""

from __future__ import annotations

from hub.api.base import APIHandler
from hub.api.models import service_model
from hub.handlers.base import HubError


class ServiceListHandler(APIHandler):
    """``GET`` → ``{name: service model}`` for every configured service."""

    def get(self) -> None:
        assert self.identity is not None
        if not (self.identity.can("list:services") or self.identity.can("read:services")):
            raise HubError(403, "Action is not authorized with current scopes; "
                                "requires list:services")
        services = self.hub.external_services
        self.write_json({name: service_model(self, services[name]) for name in sorted(services)})


class ServiceHandler(APIHandler):
    """``GET`` one service's model (404 for unknown ones and for callers who may not see it)."""

    def get(self, name: str) -> None:
        assert self.identity is not None
        service = self.hub.external_services.get(name)
        if service is None or not any(self.identity.can(s) for s in
                                      ("read:services:name", "read:roles:services")):
            raise HubError(404, f"No such service: {name}")
        self.write_json(service_model(self, service))


routes = [
    (r"api/services", ServiceListHandler),
    (r"api/services/([^/]+)", ServiceHandler),
]
