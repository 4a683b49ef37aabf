"""The Jupyter Server application run by ``himalia-singleuser``.

:class:`HimaliaServerApp` is Jupyter Server's ``ServerApp`` with a few small hooks, each one
step of the single-user server's life:

- ``parse_command_line`` — the configuration derived from the hub's environment is applied on
  top of command-line flags and config files (the hub, not the user, decides where the server
  binds and how it authenticates);
- ``init_logging`` — this package's loggers write through Jupyter Server's log handler;
- ``init_configurables`` — the :class:`~singleuser.auth.HubIdentityProvider` gets its
  configuration and hub client;
- ``init_webapp`` — tells JupyterLab about the hub (control panel and logout links);
- ``start_app`` / ``stop`` — start and stop the :class:`~singleuser.activity.ActivityReporter`.
"""

from __future__ import annotations

import logging
import warnings

from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import JupyterServerAuthWarning
from traitlets import Bool
from traitlets.config import Config

from singleuser.activity import ActivityReporter, with_busy_kernels
from singleuser.auth import HubIdentityProvider
from singleuser.env import HubEnv
from singleuser.hubclient import HubClient

__all__ = ["HimaliaServerApp"]

# jupyter_server_terminals' TermSocket.get is not decorated, so Jupyter Server warns about it at
# every start; it checks the user itself, and with allow_unauthenticated_access=False Jupyter
# Server refuses anonymous websockets anyway (tested). Only that exact warning is silenced.
_TERMSOCKET_WARNING = (
    r"Extension endpoints without @allow_unauthenticated, @ws_authenticated, nor "
    r"@web\.authenticated:\n- GET of TermSocket registered for \S+$"
)


class HimaliaServerApp(ServerApp):
    """Jupyter Server configured by, and authenticating through, a Himalia (or JupyterHub) hub.

    Create it with :meth:`launch`; the attributes below are set before ``initialize``.
    """

    # name stays "jupyter-server", so the usual jupyter_server_config files apply
    description = "A single-user Jupyter server spawned by a Himalia hub."

    # Not configurable upstream: don't write the browser-redirect HTML file nobody opens.
    no_browser_open_file = Bool(True)

    hub_env: HubEnv
    hub_client: HubClient
    hub_config: Config
    #: read by JupyterLab to show the hub's control panel for named servers
    server_name: str
    activity: ActivityReporter | None = None

    @classmethod
    def launch(cls, env: HubEnv, config: Config, argv: list[str]) -> None:
        """Create the application for ``env``, initialize it with ``argv`` and run it."""
        warnings.filterwarnings("ignore", _TERMSOCKET_WARNING, JupyterServerAuthWarning)
        app = cls.instance()
        app.hub_env = env
        app.hub_config = config
        app.server_name = env.server_name
        app.hub_client = HubClient(env.api_url, env.api_token)
        app.initialize(argv)
        app.start()

    def parse_command_line(self, argv: list[str] | None = None) -> None:
        """Parse flags, then make the hub-derived configuration take precedence."""
        super().parse_command_line(argv)
        # traitlets re-applies cli_config after loading config files, so merging ours into it
        # makes the hub's settings win over both flags and files.
        self.cli_config.merge(self.hub_config)
        self.update_config(self.hub_config)

    def init_logging(self) -> None:
        """Route ``singleuser.*`` log records through Jupyter Server's handler."""
        super().init_logging()
        logger = logging.getLogger("singleuser")
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.parent = self.log
        logger.setLevel(self.log.level)

    def init_configurables(self) -> None:
        """Create Jupyter Server's managers, then set up the hub identity provider."""
        super().init_configurables()
        provider = self.identity_provider
        if not isinstance(provider, HubIdentityProvider):
            raise RuntimeError(
                f"identity_provider_class must be HubIdentityProvider, got {type(provider)}"
            )
        provider.setup(self.hub_env, self.hub_client)

    def init_webapp(self) -> None:
        """Add the hub's settings JupyterLab looks for, keeping configured tornado settings."""
        env = self.hub_env
        self.tornado_settings.update(hub_prefix=env.hub_prefix, hub_host=env.hub_host,
                                     user=env.user)
        super().init_webapp()

    def start_app(self) -> None:
        """Start serving, and start activity reports when the hub gave an activity URL."""
        super().start_app()
        env = self.hub_env
        if env.activity_url:
            self.activity = ActivityReporter(
                self.hub_client,
                env.activity_url,
                env.server_name,
                with_busy_kernels(self.web_app.last_activity, self.kernel_manager.list_kernels),
                env.activity_interval,
            )
            self.activity.start()
            self.log.info("reporting activity to the hub every %gs", env.activity_interval)
        else:
            self.log.warning("JUPYTERHUB_ACTIVITY_URL not set: not reporting activity")

    def stop(self, from_signal: bool = False) -> None:
        """Stop activity reports, then the server."""
        if self.activity is not None:
            self.activity.stop()
            self.activity = None
        super().stop(from_signal=from_signal)
