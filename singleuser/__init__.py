"""Himalia's single-user notebook server.

``himalia-singleuser`` runs Jupyter Server with JupyterLab for one user, configured from the
``JUPYTERHUB_*`` environment the hub hands to a spawned server (``../shared/CONTRACTS.md`` §2),
and logs browsers in through the hub's OAuth2 provider (§3). It talks to the hub only over HTTP
and imports nothing from ``hub`` or ``proxy``.

Modules:

- :mod:`singleuser.env` — parse and validate the environment into :class:`~singleuser.env.HubEnv`;
- :mod:`singleuser.oauth` — OAuth/PKCE/scope/next-URL logic without I/O;
- :mod:`singleuser.hubclient` — the HTTP calls to the hub API;
- :mod:`singleuser.auth` — the Jupyter Server ``IdentityProvider`` and the OAuth handlers;
- :mod:`singleuser.activity` — periodic activity reports to the hub;
- :mod:`singleuser.app` — the ``himalia-singleuser`` entry point.
"""
