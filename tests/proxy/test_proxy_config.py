"""Configuration: the option registry, its documentation, and refusals at start."""

from __future__ import annotations

import dataclasses

import pytest

import proxy.__main__ as cli
from proxy.config import OPTIONS, ConfigError, ProxyConfig, build_parser, from_args

ENV = {"CONFIGPROXY_AUTH_TOKEN": "t0ken"}


def test_every_setting_has_a_documented_flag() -> None:
    fields = {f.name for f in dataclasses.fields(ProxyConfig)} - {"auth_token"}
    assert {option.field for option in OPTIONS} == fields
    usage = build_parser().format_help()
    for option in OPTIONS:
        assert option.help.strip()
        assert option.flag in usage
        assert option.flag in (cli.__doc__ or ""), f"{option.flag} missing from proxy.__main__"


def test_chp_compatible_flags_and_defaults() -> None:
    config = from_args([], ENV)
    assert (config.port, config.api_ip, config.effective_api_port) == (8000, "127.0.0.1", 8001)
    config = from_args(
        ["--ip", "0.0.0.0", "--port", "9000", "--api-ip", "127.0.0.2", "--api-port", "9100",
         "--default-target", "http://127.0.0.1:8081", "--error-target",
         "http://127.0.0.1:8081/hub/error", "--log-level", "warn", "--keep-alive-timeout",
         "5000", "--timeout", "3000", "--routes-file", "/tmp/r.jsonl", "--host-routing"],
        ENV,
    )
    assert config.port == 9000 and config.effective_api_port == 9100
    assert config.default_target == "http://127.0.0.1:8081"
    assert config.keep_alive_timeout == 5000 and config.host_routing
    assert from_args(["--port", "0"], ENV).effective_api_port == 0


def test_token_comes_from_the_environment_only() -> None:
    config = from_args([], ENV)
    assert config.auth_token == "t0ken"
    assert "t0ken" not in repr(config)
    with pytest.raises(SystemExit):
        from_args(["--auth-token", "x"], ENV)


def test_refuses_to_start_without_token() -> None:
    with pytest.raises(ConfigError, match="CONFIGPROXY_AUTH_TOKEN"):
        from_args([], {})
    with pytest.raises(ConfigError, match="CONFIGPROXY_AUTH_TOKEN"):
        from_args([], {"CONFIGPROXY_AUTH_TOKEN": ""})
    assert from_args(["--no-auth"], {}).auth_token is None
    with pytest.raises(ConfigError, match="loopback"):
        from_args(["--no-auth", "--api-ip", "0.0.0.0"], {})
    # a token, when present, is enforced even with --no-auth
    assert from_args(["--no-auth", "--api-ip", "0.0.0.0"], ENV).auth_token == "t0ken"


@pytest.mark.parametrize(
    "argv",
    [
        ["--ssl-key", "k.pem"],
        ["--default-target", "ftp://x"],
        ["--error-target", "not a url"],
        ["--port", "70000"],
        ["--log-level", "chatty"],
        ["--timeout", "0"],
    ],
)
def test_invalid_settings(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        from_args(argv, ENV)


def test_main_reports_config_errors(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFIGPROXY_AUTH_TOKEN", raising=False)
    assert cli.main([]) == 2
    assert "refusing to start" in capsys.readouterr().err
