"""``GET /hub/api/spec`` — the REST API's OpenAPI 3.1 specification, as YAML.

Public: a specification holds no secrets, and a client (or a person) should be able to read it
before it has a token. The document is ``docs/rest-api.yml`` in a source checkout, installed as
``share/jupyter/hub/rest-api.yml`` (see :func:`hub.paths.api_spec_file`); it is read once.
"""

from __future__ import annotations

from functools import cache

from hub.api.base import APIHandler
from hub.handlers.base import HubError
from hub.paths import api_spec_file

MEDIA_TYPE = "application/yaml; charset=UTF-8"


@cache
def spec_bytes() -> bytes:
    """The specification's YAML source (raises ``OSError`` when it is not installed)."""
    return api_spec_file().read_bytes()


class SpecHandler(APIHandler):
    """``GET`` answers the YAML source of ``docs/rest-api.yml``; no authentication."""

    public = True

    def get(self) -> None:
        try:
            body = spec_bytes()
        except OSError as e:
            raise HubError(404, "The API specification is not installed",
                           log_message=f"cannot read the API spec: {e}") from None
        self.set_header("Content-Type", MEDIA_TYPE)
        self.set_header("Cache-Control", "public, max-age=3600")
        self.finish(body)


routes = [
    (r"api/spec", SpecHandler),
]
