"""The JupyterHub-compatible REST API under ``<base_url>hub/api``, one module per resource."""
