"""A real OpenID Provider for tests: panva's ``oidc-provider`` (npm) running
``tests/engines/oidc/provider.mjs`` on an ephemeral loopback port, stopped by its PID.

``scripts/test-setup.sh`` installs node (Debian's) and the pinned npm packages into
``tests/engines/oidc/node_modules``; without them the tests that need a provider are skipped.
Accounts: alice [students, gpu], bob [students], carol [staff, hub-admins]; password
``<name>-pw``. :func:`sign_in` drives the provider's own login form with ``requests``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

ENGINE = Path(__file__).resolve().parent / "engines" / "oidc"
CLIENT_ID = "himalia"
CLIENT_SECRET = "himalia-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OIDCProvider:
    """One provider process; ``redirect_path`` is the hub's callback path (any port)."""

    def __init__(self, work: Path, redirect_path: str) -> None:
        self.work = work
        self.port = free_port()
        self.redirect_path = redirect_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, rotate_keys: bool = False) -> OIDCProvider:
        node = shutil.which("node")
        if node is None or not (ENGINE / "node_modules" / "oidc-provider").is_dir():
            pytest.skip("node or tests/engines/oidc/node_modules missing "
                        "(scripts/test-setup.sh installs them)")
        env = {**os.environ, "OIDC_PORT": str(self.port), "OIDC_CLIENT_ID": CLIENT_ID,
               "OIDC_CLIENT_SECRET": CLIENT_SECRET,
               "OIDC_REDIRECT_URIS": f"http://127.0.0.1:1{self.redirect_path}",
               "OIDC_KEYS_FILE": str(self.work / "jwks.json"),
               "OIDC_ROTATE_KEYS": "1" if rotate_keys else "0"}
        with open(self.work / "provider.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen([node, str(ENGINE / "provider.mjs")], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.work)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("oidc provider exited:\n" + self.log_text())
            try:
                requests.get(self.issuer + "/.well-known/openid-configuration", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("oidc provider did not answer:\n" + self.log_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        path = self.work / "provider.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def mutate(self, mode: str) -> None:
        """Doctor the ID tokens of the next token responses ("" to stop; see provider.mjs)."""
        requests.post(self.issuer + "/test/mutate", data={"mode": mode},
                      timeout=5).raise_for_status()


def sign_in(s: requests.Session, start_url: str, username: str, stop_at: str) -> str:
    """Follow redirects from ``start_url`` through the provider's login form (as
    ``username``, password ``<username>-pw``) until a URL starting with ``stop_at`` (the hub's
    callback); return that URL without requesting it."""
    url = start_url
    for _ in range(20):
        if url.startswith(stop_at):
            return url
        r = s.get(url, allow_redirects=False, timeout=30)
        if r.is_redirect:
            url = urljoin(url, r.headers["Location"])
            continue
        if r.status_code == 200 and 'name="password"' in r.text:
            action = r.text.split('action="', 1)[1].split('"', 1)[0]
            r = s.post(urljoin(url, action), allow_redirects=False, timeout=30,
                       data={"username": username, "password": f"{username}-pw"})
            assert r.is_redirect, (r.status_code, r.text[:300])
            url = urljoin(url, r.headers["Location"])
            continue
        raise AssertionError(f"unexpected {r.status_code} at {url}: {r.text[:300]}")
    raise AssertionError("too many redirects")


def hub_env(provider: OIDCProvider, scopes: str = "openid,profile,email,groups"
            ) -> dict[str, str]:
    """``HIMALIA_*`` settings for a hub signing in with ``provider`` and running the tests'
    tiny server (fast to start)."""
    from tests.hub import mockserver

    cmd, args = mockserver.command("normal", 0.5)
    return {"HIMALIA_AUTHENTICATOR": "oidc", "HIMALIA_OIDC_ISSUER": provider.issuer,
            "HIMALIA_OIDC_CLIENT_ID": CLIENT_ID, "HIMALIA_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "HIMALIA_OIDC_SCOPES": scopes, "HIMALIA_OIDC_LOGIN_SERVICE": "Test IdP",
            "HIMALIA_SINGLEUSER_CMD": ",".join(cmd), "HIMALIA_SINGLEUSER_ARGS": ",".join(args)}
