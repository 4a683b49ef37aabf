"""Validation of user, server and group names, and of ``next=`` redirect targets. Pure logic."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

MAX_NAME = 255
_SERVER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")


class NameError_(ValueError):
    """A name that the hub refuses (the message says why, safe to show users)."""


def normalize_username(raw: str) -> str:
    """Lower-case, NFKC-normalize and strip a login name."""
    return unicodedata.normalize("NFKC", raw).strip().lower()


def validate_username(name: str) -> str:
    """Return ``name`` if it is an acceptable (already normalized) username, else raise."""
    if not name:
        raise NameError_("username must not be empty")
    if len(name) > MAX_NAME:
        raise NameError_(f"username must be at most {MAX_NAME} characters")
    if name != name.strip():
        raise NameError_("username must not start or end with whitespace")
    if "/" in name or "\\" in name:
        raise NameError_("username must not contain slashes")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise NameError_("username must not contain control characters")
    if not name.strip("."):
        # ".", "..", "...": path segments that URL normalisation (browsers, proxies) may fold.
        raise NameError_("username must not consist of dots only")
    return name


def clean_username(raw: str) -> str:
    """Normalize then validate."""
    return validate_username(normalize_username(raw))


def validate_server_name(name: str) -> str:
    """Named servers: 1–30 characters of ``[a-z0-9-]`` starting with a letter."""
    if not _SERVER_NAME.match(name):
        raise NameError_(
            "server name must be 1-30 characters of a-z, 0-9 and '-', starting with a letter"
        )
    return name


def validate_group_name(name: str) -> str:
    """Group names follow the username rules (without case folding)."""
    return validate_username(name)


def safe_next_url(raw: str | None, default: str) -> str:
    """A local path from a ``next=`` value, or ``default``.

    Accepts only a path with a single leading ``/``: absolute URLs, protocol-relative
    ``//host``, backslash tricks and control characters all give ``default``.
    """
    if not raw:
        return default
    if any(ord(c) < 0x20 or c == "\\" for c in raw):
        return default
    if not raw.startswith("/") or raw.startswith("//"):
        return default
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return default
    return raw
