"""Himalia's hub: login, users, servers, REST API and admin pages, mounted at ``/hub``."""

__version__ = "0.1.0"
#: The JupyterHub REST API level we implement, reported in ``X-JupyterHub-Version``.
API_VERSION = "5.3.0"
