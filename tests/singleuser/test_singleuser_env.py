"""Parsing and validation of the JUPYTERHUB_* environment (no sockets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from singleuser.app import SERVER_EXTENSIONS, build_config
from singleuser.env import VARIABLES, EnvError, from_environ, quote_path


def base_env(**overrides: str) -> dict[str, str]:
    env = {
        "JUPYTERHUB_API_TOKEN": "server-secret",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api/",
        "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice",
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:50123/user/alice/",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_minimal_environment_defaults() -> None:
    env = from_environ(base_env())
    assert env.api_url == "http://127.0.0.1:8081/hub/api"
    assert (env.bind_ip, env.bind_port) == ("127.0.0.1", 50123)
    assert env.service_prefix == "/user/alice/"
    assert env.base_url == "/"
    assert env.server_name == ""
    assert env.oauth_callback_url == "/user/alice/oauth_callback"
    assert env.oauth_callback_path == "/user/alice/oauth_callback"
    assert env.access_scopes == ("access:servers!server=alice/", "access:servers!user=alice")
    assert env.authorize_url == "/hub/api/oauth2/authorize"
    assert env.token_url == "http://127.0.0.1:8081/hub/api/oauth2/token"
    assert env.user_url == "http://127.0.0.1:8081/hub/api/user"
    assert env.activity_url is None
    assert env.activity_interval == 300
    assert env.default_url == "/lab"
    assert "server-secret" not in repr(env)


def test_missing_variables_are_all_reported() -> None:
    with pytest.raises(EnvError) as info:
        from_environ({})
    message = str(info.value)
    for name in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_CLIENT_ID",
                 "JUPYTERHUB_USER", "JUPYTERHUB_SERVICE_URL"):
        assert f"{name} is not set" in message
    assert len(info.value.problems) == 5


def test_legacy_token_variable() -> None:
    env = base_env()
    del env["JUPYTERHUB_API_TOKEN"]
    env["JPY_API_TOKEN"] = "legacy"
    assert from_environ(env).api_token == "legacy"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("JUPYTERHUB_API_URL", "127.0.0.1:8081/hub/api", "absolute http(s) URL"),
        ("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1/user/alice/", "valid port"),
        ("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:99999/user/alice/", "valid port"),
        ("JUPYTERHUB_SERVICE_URL", "unix:///tmp/sock", "http://ip:port"),
        ("JUPYTERHUB_SERVICE_PREFIX", "/user/bob/", "differs from the path"),
        ("JUPYTERHUB_SERVICE_PREFIX", "user/alice/", "starting with a single '/'"),
        ("JUPYTERHUB_SERVICE_PREFIX", "//evil/", "starting with a single '/'"),
        ("JUPYTERHUB_OAUTH_ACCESS_SCOPES", "access:servers", "JSON list"),
        ("JUPYTERHUB_OAUTH_ACCESS_SCOPES", "[1, 2]", "JSON list"),
        ("JUPYTERHUB_OAUTH_CALLBACK_URL", "/user/bob/oauth_callback", "under the service prefix"),
        ("JUPYTERHUB_ACTIVITY_INTERVAL", "0", "positive number"),
        ("JUPYTERHUB_ACTIVITY_INTERVAL", "soon", "positive number"),
        ("JUPYTERHUB_ACTIVITY_URL", "/hub/api/users/alice/activity", "absolute http(s) URL"),
        ("JUPYTERHUB_HOST", "https://hub.example.org/path", "without a path"),
        ("JUPYTERHUB_DEFAULT_URL", "https://evil.example/", "local path"),
        ("JUPYTERHUB_CLIENT_ID", "jupyterhub user", "spaces"),
        ("JUPYTERHUB_ROOT_DIR", "/nonexistent/dir", "not a directory"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(EnvError) as info:
        from_environ(base_env(**{name: value}))
    assert any(p.startswith(name) and fragment in p for p in info.value.problems), info.value


def test_prefix_from_service_url_path_or_explicit() -> None:
    env = from_environ(base_env(JUPYTERHUB_SERVICE_URL="http://10.0.0.5:8888",
                                JUPYTERHUB_SERVICE_PREFIX="/user/alice"))
    assert env.service_prefix == "/user/alice/"
    assert (env.bind_ip, env.bind_port) == ("10.0.0.5", 8888)
    with pytest.raises(EnvError, match="JUPYTERHUB_SERVICE_PREFIX: not set"):
        from_environ(base_env(JUPYTERHUB_SERVICE_URL="http://10.0.0.5:8888/"))


def test_base_url_with_space_and_at_is_quoted() -> None:
    env = from_environ(base_env(
        JUPYTERHUB_BASE_URL="/my hub@/",
        JUPYTERHUB_SERVICE_URL="http://127.0.0.1:50123/my%20hub@/user/alice/",
        JUPYTERHUB_SERVICE_PREFIX="/my hub@/user/alice/",
        JUPYTERHUB_OAUTH_CALLBACK_URL="/my%20hub@/user/alice/oauth_callback",
    ))
    assert env.base_url == "/my%20hub@/"
    assert env.service_prefix == "/my%20hub@/user/alice/"
    assert env.authorize_url == "/my%20hub@/hub/api/oauth2/authorize"
    assert env.hub_prefix == "/my%20hub@/hub/"
    # the redirect_uri is sent exactly as registered; the route uses the encoded path
    assert env.oauth_callback_url == "/my%20hub@/user/alice/oauth_callback"
    assert env.oauth_callback_path == "/my%20hub@/user/alice/oauth_callback"


def test_quote_path_is_idempotent() -> None:
    for raw in ("/my hub@/", "/a%20b/", "/ünï/cödé/", "/x+y(1)/"):
        once = quote_path(raw)
        assert quote_path(once) == once
        assert " " not in once


def test_named_server_and_subdomain_host() -> None:
    env = from_environ(base_env(
        JUPYTERHUB_SERVER_NAME="gpu",
        JUPYTERHUB_CLIENT_ID="jupyterhub-user-alice-gpu",
        JUPYTERHUB_SERVICE_URL="http://127.0.0.1:50123/user/alice/gpu/",
        JUPYTERHUB_HOST="https://hub.example.org/",
        JUPYTERHUB_OAUTH_CALLBACK_URL="https://alice.hub.example.org/user/alice/gpu/oauth_callback",
    ))
    assert env.access_scopes == ("access:servers!server=alice/gpu", "access:servers!user=alice")
    assert env.authorize_url == "https://hub.example.org/hub/api/oauth2/authorize"
    assert env.oauth_callback_path == "/user/alice/gpu/oauth_callback"


def test_optional_values(tmp_path: Path) -> None:
    env = from_environ(base_env(
        JUPYTERHUB_OAUTH_SCOPES='["access:servers!server=alice/"]',
        JUPYTERHUB_ACTIVITY_URL="http://127.0.0.1:8081/hub/api/users/alice/activity",
        JUPYTERHUB_ACTIVITY_INTERVAL="2.5",
        JUPYTERHUB_ROOT_DIR=str(tmp_path),
        JUPYTERHUB_DEFAULT_URL="/tree",
    ))
    assert env.access_scopes == ("access:servers!server=alice/",)
    assert env.activity_url == "http://127.0.0.1:8081/hub/api/users/alice/activity"
    assert env.activity_interval == 2.5
    assert env.root_dir == str(tmp_path)
    assert env.default_url == "/tree"


def test_every_variable_is_documented() -> None:
    source = (Path(__file__).parents[2] / "singleuser" / "env.py").read_text()
    read = set(re.findall(r'"(JUPYTERHUB_[A-Z_]+|JPY_[A-Z_]+)"', source))
    documented = {v.name for v in VARIABLES}
    legacy = {"JPY_API_TOKEN", "JUPYTERHUB_OAUTH_SCOPES"}
    assert read - legacy == documented
    assert all(v.help for v in VARIABLES)


def test_build_config() -> None:
    env = from_environ(base_env(JUPYTERHUB_BASE_URL="/my hub@/",
                                JUPYTERHUB_SERVICE_URL="http://127.0.0.1:50123/my%20hub@/u/a/",
                                JUPYTERHUB_OAUTH_CALLBACK_URL="/my%20hub@/u/a/oauth_callback"))
    c = build_config(env, cookie_secret=b"x" * 32)
    s = c.ServerApp
    assert (s.ip, s.port, s.port_retries) == ("127.0.0.1", 50123, 0)
    assert s.base_url == "/my%20hub@/u/a/"
    assert s.default_url == "/lab"
    assert s.allow_root is True and s.open_browser is False
    assert s.allow_unauthenticated_access is False
    assert s.identity_provider_class == "singleuser.auth.HubIdentityProvider"
    assert s.jpserver_extensions == SERVER_EXTENSIONS
    assert s.jpserver_extensions["jupyterlab"] is True
    assert c.HubIdentityProvider.token == ""
    assert s.cookie_secret == b"x" * 32
    assert build_config(env).ServerApp.cookie_secret != build_config(env).ServerApp.cookie_secret
