"""Canonical request paths and route keys: the proxy's defence against route confusion.

The proxy decides which server a request reaches by comparing its path with route keys
segment by segment. A backend that reads the same path differently (decoding ``%2F`` into a
separator, resolving ``..``, treating ``\\`` as ``/``) could then be handed a request that, in
its own eyes, belongs to another user. So every path goes through :func:`canonical_path`:

* The request target must be origin-form (``/...``); the query string is never routed on.
* Percent-escapes must be well formed (``%`` + two hex digits) and ``%00`` is refused.
* Escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded and the others get
  upper-case hex — URI normalisation per RFC 3986 §6.2.2, so ``/%75ser/alice`` and
  ``/user/alice`` route alike. ``%2F`` and ``%5C`` stay encoded: they are data inside one
  segment, never separators.
* Dot segments (``.``, ``..``, in any encoding), raw backslashes and ``#`` are refused.
* Empty segments (``//``) are kept as segments: ``//user/alice`` does not match
  ``/user/alice``, exactly as a backend that does not merge slashes sees it.

Refusals raise :class:`BadPath`; the server answers ``400``. The request is always forwarded
with its original bytes: the canonical form is used only to choose the route.
"""

from __future__ import annotations

import re

__all__ = ["BadPath", "canonical_host", "canonical_key", "canonical_path"]

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# a Host header: a DNS-ish name or a bracketed IPv6 literal, optionally with a port
_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?$")


class BadPath(ValueError):
    """A path (or host) the proxy refuses to route; the message says why (for logs)."""


def _normalise_escapes(path: str) -> str:
    """Validate every ``%XX`` escape, decode unreserved ones and upper-case the rest."""
    pieces = path.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            raise BadPath("malformed percent-escape")
        char = chr(int(piece[:2], 16))
        if char == "\x00":
            raise BadPath("encoded NUL")
        if char in _UNRESERVED:
            out.append(char + piece[2:])
        else:
            out.append("%" + piece[:2].upper() + piece[2:])
    return "".join(out)


def canonical_path(path: str) -> str:
    """Return the canonical form of an origin-form request path (query already removed).

    Raises :class:`BadPath` for anything the proxy refuses to route (see module docstring).
    """
    if not path.startswith("/"):
        raise BadPath("not an origin-form path")
    # fast path: nothing to decode, no backslash, no fragment, no segment starting with "."
    if "%" not in path and "\\" not in path and "/." not in path and "#" not in path:
        return path
    if "\\" in path:
        raise BadPath("backslash in path")
    if "#" in path:
        raise BadPath("fragment in request target")
    if "%" in path:
        path = _normalise_escapes(path)
    for segment in path.split("/"):
        if segment in (".", ".."):
            raise BadPath("dot segment in path")
    return path


def canonical_key(key: str) -> str:
    """Return the canonical route key for ``key`` as given to the REST API.

    Keys get a leading ``/`` and lose a trailing one (``/user/alice/`` and ``user/alice``
    both become ``/user/alice``, as configurable-http-proxy stores them); ``/`` stays ``/``.
    Raises :class:`BadPath` for a key no request could ever match.
    """
    if "?" in key:
        raise BadPath("query in route key")
    if not key.startswith("/"):
        key = "/" + key
    key = canonical_path(key)
    if len(key) > 1 and key.endswith("/"):
        key = key[:-1]
    return key


def canonical_host(host: str) -> str:
    """Return the lower-cased host name of a ``Host`` header value, port removed.

    Used as the first path segment with ``--host-routing``. Raises :class:`BadPath` for a
    value that is not a plain host name or IPv6 literal.
    """
    match = _HOST_RE.match(host)
    if match is None:
        raise BadPath("invalid Host header")
    return match.group(1).lower()
