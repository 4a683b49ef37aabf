"""LDAP / Active Directory sign-in, the ``ldap`` authenticator (:mod:`ldap3`, in a worker thread).

How a password is checked:

- **DN template** (``ldap_bind_dn_template``, e.g. ``uid={username},ou=people,dc=example,dc=org``):
  bind as that DN, the username DN-escaped (RFC 4514), so ``,``, ``=``, ``+`` and the like in a
  name can never point the bind at another entry;
- **search-then-bind** (no template): the service account ``ldap_bind_dn`` finds exactly one
  entry under ``ldap_search_base`` with ``ldap_search_filter``, the username filter-escaped
  (RFC 4515: ``*``, ``(``, ``)``, ``\\`` and NUL become ``\\2a``…), then a second connection binds
  as that entry with the password.

An empty password is refused before anything is sent (an LDAP bind with a DN and no password is
an *unauthenticated* bind that many servers accept). ``ldaps://`` URLs use TLS from the start;
``ldap_starttls`` upgrades an ``ldap://`` connection; both check the server's certificate
against ``ldap_ca_file`` (or the system's CAs).

Groups: the names (first RDN value, e.g. the ``cn``) of the DNs in the user's
``ldap_group_attribute`` (``memberOf``), or, with that empty, of the groups under
``ldap_group_search_base`` whose ``member`` is the user's DN. They feed ``allowed_groups``,
``admin_groups`` and ``manage_groups`` (:mod:`hub.services.access`).

Every connect and operation is bounded by ``ldap_timeout``; a directory that cannot be reached
or fails raises :class:`~hub.services.auth.AuthUnavailable` (a 503 page), never a hang.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import ssl
from urllib.parse import unquote, urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config, ConfigError
from hub.services.auth import Authenticator, AuthResult, AuthUnavailable

log = logging.getLogger(__name__)


_ESCAPE = re.compile(r"\\([0-9a-fA-F]{2}|.)")


def _unescape(value: str) -> str:
    """An RFC 4514 attribute value without its escapes: ``a\\,b`` → ``a,b``,
    ``\\c3\\a9`` → ``é``."""
    def byte(m: re.Match[str]) -> str:
        code = m.group(1)
        return f"%{code}" if len(code) == 2 else "".join(f"%{b:02x}" for b in code.encode())

    return unquote(_ESCAPE.sub(byte, value.replace("%", "%25")), errors="replace")


def group_names(dns: list[str]) -> list[str]:
    """``cn=students,ou=groups,…`` → ``students`` (the first RDN's value); bad DNs skipped."""
    out: list[str] = []
    for dn in dns:
        try:
            out.append(_unescape(str(parse_dn(dn)[0][1])))
        except (LDAPException, IndexError, ValueError):
            continue
    return out


class LDAPAuthenticator(Authenticator):
    """Users and passwords from an LDAP directory (see the module docstring)."""

    name = "ldap"

    def __init__(self, db: sessionmaker[Session], config: Config | None = None) -> None:
        super().__init__(db, config)
        cfg = self.config
        url = urlsplit(cfg.ldap_url)
        if url.scheme not in ("ldap", "ldaps") or not url.hostname:
            raise ConfigError("the ldap authenticator needs ldap_url (ldaps://host or "
                              "ldap://host)")
        if not cfg.ldap_bind_dn_template and not cfg.ldap_search_base:
            raise ConfigError("the ldap authenticator needs ldap_bind_dn_template or "
                              "ldap_search_base (search-then-bind)")
        if cfg.ldap_bind_dn_template and "{username}" not in cfg.ldap_bind_dn_template:
            raise ConfigError("ldap_bind_dn_template must contain {username}")
        if not cfg.ldap_group_attribute and not cfg.ldap_group_search_base and (
                cfg.allowed_groups or cfg.admin_groups or cfg.manage_groups):
            raise ConfigError("group rules need ldap_group_attribute or ldap_group_search_base")
        self.use_ssl = url.scheme == "ldaps"
        self.host = url.hostname
        self.port = url.port or (636 if self.use_ssl else 389)
        self.tls = ldap3.Tls(ca_certs_file=cfg.ldap_ca_file or None,
                             validate=ssl.CERT_REQUIRED)

    async def authenticate(self, username: str, password: str) -> str | AuthResult | None:
        if not password:
            return None
        loop = asyncio.get_running_loop()
        # The thread's own timeouts bound each step; this bounds the whole attempt.
        limit = 4 * self.config.ldap_timeout + 1
        try:
            async with asyncio.timeout(limit):
                return await loop.run_in_executor(None, self._check, username, password)
        except TimeoutError:
            raise AuthUnavailable(f"directory did not answer within {limit:g} s") from None

    # --- in the worker thread ----------------------------------------------------------------
    def _connect(self, user: str | None, password: str | None) -> ldap3.Connection:
        """An open (not yet bound) connection, TLS started; AuthUnavailable on failure."""
        timeout = max(1, math.ceil(self.config.ldap_timeout))  # ldap3 packs it as an integer
        server = ldap3.Server(self.host, port=self.port, use_ssl=self.use_ssl, tls=self.tls,
                              connect_timeout=timeout, get_info=ldap3.NONE)
        conn = ldap3.Connection(server, user=user, password=password, read_only=True,
                                receive_timeout=timeout, raise_exceptions=False,
                                auto_referrals=False)
        try:
            conn.open()
            if self.config.ldap_starttls and not self.use_ssl and not conn.start_tls():
                raise AuthUnavailable(f"StartTLS refused: {conn.result.get('description')}")
        except (LDAPException, OSError) as e:
            raise AuthUnavailable(f"cannot reach {self.host}:{self.port}: "
                                  f"{type(e).__name__}") from None
        return conn

    def _bind(self, conn: ldap3.Connection) -> bool:
        try:
            ok = bool(conn.bind())
        except LDAPException as e:
            raise AuthUnavailable(f"bind failed: {type(e).__name__}") from None
        if not ok and conn.result.get("result") not in (49, 32, 34):
            # 49 invalidCredentials, 32 noSuchObject, 34 invalidDNSyntax: a wrong login.
            raise AuthUnavailable(f"bind failed: {conn.result.get('description')}")
        return ok

    def _search(self, conn: ldap3.Connection, base: str, flt: str, scope: str,
                attrs: list[str]) -> list[ldap3.abstract.entry.Entry]:
        try:
            conn.search(base, flt, search_scope=scope, attributes=attrs, size_limit=50,
                        time_limit=int(self.config.ldap_timeout) or 1)
        except LDAPException as e:
            raise AuthUnavailable(f"search failed: {type(e).__name__}") from None
        if conn.result.get("result") not in (0, 4, 32):  # success, sizeLimit, noSuchObject
            raise AuthUnavailable(f"search failed: {conn.result.get('description')}")
        return list(conn.entries)

    def _check(self, username: str, password: str) -> AuthResult | None:
        cfg = self.config
        attrs = [cfg.ldap_group_attribute] if cfg.ldap_group_attribute else []
        if cfg.ldap_bind_dn_template:
            user_dn = cfg.ldap_bind_dn_template.format(username=escape_rdn(username))
            conn = self._connect(user_dn, password)
            try:
                if not self._bind(conn):
                    return None
                entries = self._search(conn, user_dn, "(objectClass=*)", ldap3.BASE, attrs)
                return self._result(conn, username, user_dn, entries)
            finally:
                conn.unbind()
        service = self._connect(cfg.ldap_bind_dn or None, cfg.ldap_bind_password or None)
        try:
            if not self._bind(service):
                raise AuthUnavailable("the service account (ldap_bind_dn) cannot bind")
            flt = cfg.ldap_search_filter.format(username=escape_filter_chars(username))
            entries = self._search(service, cfg.ldap_search_base, flt, ldap3.SUBTREE, attrs)
            if len(entries) != 1:
                return None  # nobody, or an ambiguous filter: never guess
            user_dn = entries[0].entry_dn
            conn = self._connect(user_dn, password)
            try:
                if not self._bind(conn):
                    return None
            finally:
                conn.unbind()
            return self._result(service, username, user_dn, entries)
        finally:
            service.unbind()

    def _result(self, conn: ldap3.Connection, username: str, user_dn: str,
                entries: list[ldap3.abstract.entry.Entry]) -> AuthResult:
        cfg = self.config
        if cfg.ldap_group_attribute:
            values: list[str] = []
            if entries and cfg.ldap_group_attribute in entries[0]:
                values = [str(v) for v in entries[0][cfg.ldap_group_attribute].values]
            groups = group_names(values)
        elif cfg.ldap_group_search_base:
            found = self._search(conn, cfg.ldap_group_search_base,
                                 f"(member={escape_filter_chars(user_dn)})", ldap3.SUBTREE, [])
            groups = group_names([e.entry_dn for e in found])
        else:
            return AuthResult(name=username)
        return AuthResult(name=username, groups=groups)
