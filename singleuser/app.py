"""``himalia-singleuser``: start a user's Jupyter server as the hub asked.

Start-up sequence (:func:`main`):

1. read and validate the ``JUPYTERHUB_*`` environment (:mod:`singleuser.env`) — on error,
   print every problem and exit with status 2;
2. ``GET JUPYTERHUB_API_URL`` until it answers 2xx (:func:`~singleuser.hubclient.wait_for_hub`)
   — if it never does, print why and exit with status 1 (about 4 s when the connection is
   refused);
3. build the Jupyter Server configuration from the environment (:func:`build_config`);
4. import Jupyter Server and run :class:`~singleuser.server.HimaliaServerApp` with JupyterLab.

Extra command-line arguments are passed to Jupyter Server (``--ServerApp.x=y`` style) but
cannot override what :func:`build_config` sets.
"""

from __future__ import annotations

import logging
import os
import sys

from traitlets.config import Config

from singleuser.env import VARIABLES, EnvError, HubEnv, from_environ
from singleuser.hubclient import HubUnavailable, wait_for_hub

__all__ = ["SERVER_EXTENSIONS", "build_config", "main"]

#: Server extensions enabled (True) or disabled (False) whatever the installed config says.
#: JupyterLab needs only itself and terminals; the language-server proxy and the classic
#: notebook shims cost start-up time and are of no use without extra installs.
SERVER_EXTENSIONS: dict[str, bool] = {
    "jupyterlab": True,
    "jupyter_server_terminals": True,
    "jupyter_lsp": False,
    "notebook_shim": False,
    "nbclassic": False,
    "notebook": False,
    "voila": False,
}

USAGE = """\
usage: himalia-singleuser [--ServerApp.option=value ...]

Runs JupyterLab for one user, configured by the hub through these environment variables
(* = required):
"""


def build_config(env: HubEnv, *, cookie_secret: bytes | None = None) -> Config:
    """The Jupyter Server configuration for ``env``.

    ``cookie_secret`` signs the OAuth cookies; by default a random one per process, so
    nothing is written to disk and a restart simply sends browsers through the hub again.
    """
    c = Config()
    s = c.ServerApp
    s.ip = env.bind_ip
    s.port = env.bind_port
    s.port_retries = 0  # the hub and proxy expect exactly this port
    s.base_url = env.service_prefix
    s.default_url = env.default_url
    s.open_browser = False
    s.allow_root = True
    s.quit_button = False  # stopping is the hub's job, so the hub knows
    # Behind the proxy the Host header is the public name; access control is the hub's OAuth.
    s.allow_remote_access = True
    s.trust_xheaders = True
    # Every handler needs a user unless it is explicitly marked public.
    s.allow_unauthenticated_access = False
    s.identity_provider_class = "singleuser.auth.HubIdentityProvider"
    s.cookie_secret = cookie_secret if cookie_secret is not None else os.urandom(32)
    s.jpserver_extensions = dict(SERVER_EXTENSIONS)
    if env.root_dir:
        s.root_dir = env.root_dir
    c.HubIdentityProvider.token = ""  # no Jupyter token: the hub authenticates
    return c


def _skip_slow_optional_imports() -> None:
    """Make ``import rfc3987_syntax`` fail fast in this process.

    jsonschema (used by Jupyter Server's event logger) imports it, when installed, only to
    check the ``iri`` string format; building its Lark grammar takes about 0.9 s at import,
    a third of our start-up time. No schema Jupyter Server or JupyterLab registers uses that
    format. A ``None`` entry in ``sys.modules`` makes the import raise ``ImportError``, which
    jsonschema expects for optional format checkers.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def _usage() -> str:
    lines = [f"  {'*' if v.required else ' '} {v.name}: {v.help}" for v in VARIABLES]
    return USAGE + "\n".join(lines) + "\n"


def _private_lab_state() -> None:
    """Keep JupyterLab's workspaces and settings in this server's own working directory.

    Servers of different users may run as one OS account with one HOME; JupyterLab's default
    ``~/.jupyter/lab/workspaces`` would then show one user's open documents to the next.
    The spawner starts each server in a directory unique to its (user, server).
    """
    here = os.path.join(os.getcwd(), ".jupyter", "lab")
    os.environ.setdefault("JUPYTERLAB_WORKSPACES_DIR", os.path.join(here, "workspaces"))
    os.environ.setdefault("JUPYTERLAB_SETTINGS_DIR", os.path.join(here, "user-settings"))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``himalia-singleuser``; exits 2 on a bad environment, 1 without a hub."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        sys.stdout.write(_usage())
        return
    # Until Jupyter Server sets up logging, our messages go to stderr.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"))
    logger = logging.getLogger("singleuser")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    try:
        env = from_environ()
    except EnvError as exc:
        sys.stderr.write(f"himalia-singleuser: {exc}\n")
        raise SystemExit(2) from None
    try:
        wait_for_hub(env.api_url)
    except HubUnavailable as exc:
        sys.stderr.write(f"himalia-singleuser: cannot start: {exc}\n")
        raise SystemExit(1) from None

    _private_lab_state()
    _skip_slow_optional_imports()
    from singleuser.server import HimaliaServerApp

    HimaliaServerApp.launch(env, build_config(env), argv)
