"""``POST /hub/api/batchspawner``: a batch job's server says which port it listens on.

The JupyterHub ecosystem's call (batchspawner's ``batchspawner-singleuser`` makes it): the body
is ``{"port": N}`` (``"host"`` may be given and is only logged — the hub routes to the node Slurm
names), authenticated with the *server's own* API token, which names the server. Answers 200
``{"status": "ok"}`` once the starting server's spawner took it; 400 for a bad body, 403 for any
other token, 404 when that server is not waiting for a port (not starting, or not a batch job).
"""

from __future__ import annotations

from hub.api.base import APIHandler
from hub.db.database import transaction
from hub.db.models import APIToken, Server
from hub.handlers.base import HubError
from hub.services import tokens


class BatchReportHandler(APIHandler):
    """Takes a batch job's port report (see the module docstring)."""

    def post(self) -> None:
        data = self.json_body({"port": int, "host": str}, required=("port",))
        port = data["port"]
        if not 0 < port < 65536:
            raise HubError(400, "port must be between 1 and 65535")
        assert self.identity is not None
        token_id = tokens.parse_public_id(self.identity.token_id or "")
        with transaction(self.hub.db) as session:
            row = session.get(APIToken, token_id) if token_id is not None else None
            found = session.get(Server, row.server_id) if row is not None and \
                row.kind == "server" and row.server_id is not None else None
            if found is None:
                raise HubError(403, "Only a server's own token may report its port")
            user, server = found.user.name, found.name
        spawner = self.hub.servers.spawner(user, server)
        take = getattr(spawner, "report", None)
        if spawner is None or not callable(take) or not getattr(spawner, "waiting_for_port",
                                                                False):
            raise HubError(404, "That server is not waiting for a port")
        take(port)
        self.write_json({"status": "ok"})


routes = [
    (r"api/batchspawner", BatchReportHandler),
]
