"""A site's spawner as the auth_state hook's documentation describes it: the local spawner,
with the login's access token and groups put into the server's environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.services.local_spawner import LocalProcessSpawner


class AuthStateSpawner(LocalProcessSpawner):
    def auth_state_env(self, auth_state: Mapping[str, Any]) -> dict[str, str]:
        claims = auth_state.get("claims") or {}
        return {"OIDC_ACCESS_TOKEN": str(auth_state.get("access_token")),
                "OIDC_GROUPS": ",".join(claims.get("groups") or [])}
