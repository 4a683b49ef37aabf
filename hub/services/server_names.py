"""Every name and URL derived from a (user, server) pair, in one place.

The proxy route, the server's prefix, its OAuth client id and redirect URI, its token's scopes,
its working-directory name and the links the hub renders all come from here, so they always
agree. Paths are percent-encoded: a base URL may hold a space or ``@``; user and server names
may hold anything but ``/``. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

from hub.services import scopes

# Left alone when quoting a whole path: RFC 3986 sub-delims, ":", "@", "/", and "%" so that an
# already-encoded base URL stays as it is (the single-user server normalizes the same way).
PATH_SAFE = "/%@!$&'()*+,;=:~"
# Left alone when quoting one name as a path segment (JupyterHub's choice: /user/a@b.org/).
NAME_SAFE = "@~"


def url_base(base_url: str) -> str:
    """The configured base URL as an encoded path with one leading and trailing ``/``."""
    path = quote(base_url, safe=PATH_SAFE)
    return "/" + path.strip("/") + "/" if path.strip("/") else "/"


def server_prefix(base_url: str, user: str, server: str = "") -> str:
    """``<base_url>user/<name>/[<server>/]``, encoded: the server's URL prefix."""
    prefix = f"{url_base(base_url)}user/{quote(user, safe=NAME_SAFE)}/"
    if server:
        prefix += quote(server, safe=NAME_SAFE) + "/"
    return prefix


def route_path(base_url: str, user: str, server: str = "") -> str:
    """The proxy routing key of a server: its encoded prefix without the trailing slash."""
    return server_prefix(base_url, user, server).rstrip("/")


def oauth_callback_url(base_url: str, user: str, server: str = "") -> str:
    """The server's OAuth ``redirect_uri`` (matched exactly by the hub)."""
    return server_prefix(base_url, user, server) + "oauth_callback"


def activity_path(user: str) -> str:
    """``users/<name>/activity``, relative to the hub API URL (``JUPYTERHUB_ACTIVITY_URL``)."""
    return f"users/{quote(user, safe=NAME_SAFE)}/activity"


def client_id(user: str, server: str = "") -> str:
    """``jupyterhub-user-<name>[-<server>]``, unique per (user, server).

    ``-`` in the user name is escaped (``%2D``): otherwise user ``a`` with server ``b`` and user
    ``a-b``'s default server would share a client id, and with it OAuth cookies.
    """
    escaped = quote(user, safe=NAME_SAFE).replace("-", "%2D")
    return f"jupyterhub-user-{escaped}" + (f"-{server}" if server else "")


def access_scopes(user: str, server: str = "") -> list[str]:
    """Scopes that grant access to this server (its OAuth clients' allowed scopes)."""
    return [f"access:servers!server={user}/{server}", f"access:servers!user={user}"]


def server_token_scopes(user: str, server: str = "") -> list[str]:
    """The server's own API token: report activity, and identify users of this server."""
    granted = scopes.BUILTIN_ROLES["server"]
    return sorted(scopes.expand(granted, owner=user, server=f"{user}/{server}"))


def safe_dir_name(user: str, server: str = "") -> str:
    """A file-system-safe directory name, unique per (user, server): readable part + hash."""
    label = f"{user}~{server}" if server else user
    readable = re.sub(r"[^a-z0-9._~-]+", "_", label.lower())[:48].lstrip(".") or "_"
    digest = hashlib.sha256(f"{user}\0{server}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"{readable}-{digest[:10]}"


def label(user: str, server: str) -> str:
    """How logs and messages name a server; repr() keeps odd names (newlines) harmless."""
    return f"server {server!r} of {user!r}" if server else f"the server of {user!r}"
