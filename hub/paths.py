"""Where templates and static files live, from a source checkout or an installed wheel."""

from __future__ import annotations

import sys
from pathlib import Path

_SOURCE_SHARE = Path(__file__).resolve().parent.parent / "share" / "jupyter" / "hub"


def share_dir() -> Path:
    """``share/jupyter/hub``: next to the source tree, else under the install prefix."""
    if _SOURCE_SHARE.is_dir():
        return _SOURCE_SHARE
    for prefix in (sys.prefix, sys.base_prefix, "/usr/local", "/usr"):
        candidate = Path(prefix) / "share" / "jupyter" / "hub"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("cannot find share/jupyter/hub (templates and static files)")


def template_dir() -> Path:
    return share_dir() / "templates"


def static_dir() -> Path:
    """``static/`` at the top of a checkout; installed as ``share/jupyter/hub/static``."""
    source = _SOURCE_SHARE.parent.parent.parent / "static"
    return source if source.is_dir() else share_dir() / "static"


def api_spec_file() -> Path:
    """The REST API's OpenAPI spec: ``docs/rest-api.yml`` in a checkout, else installed as
    ``share/jupyter/hub/rest-api.yml``."""
    source = _SOURCE_SHARE.parent.parent.parent / "docs" / "rest-api.yml"
    return source if source.is_file() else share_dir() / "rest-api.yml"


def bootstrap_dir() -> Path:
    """Bootstrap 5's CSS and JS from the installed ``bootstrap-wrapper`` package."""
    import bootstrap_wrapper

    return Path(bootstrap_wrapper.get_bootstrap_dir())
