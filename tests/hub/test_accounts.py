"""Account policy, limits parsing, command lookup (pure logic), and the modes end to end:
a hub without root, unenforceable settings, the first admin's password file."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import Config, ConfigError
from hub.services import accounts, cgroups
from hub.services.local_spawner import expand_home, resolve_command
from tests import unixaccounts
from tests.hubproc import HubProcess, _kill_group


@pytest.mark.parametrize("name", ["alice", "jupyter-a.b", "_svc", "a" * 32, "x1"])
def test_portable_unix_names_pass(name: str) -> None:
    accounts.check_unix_name(name, name)


@pytest.mark.parametrize("name", ["", "-x", ".x", "a" * 33, "A", "a b", "ä", "a@b", "123",
                                  "a/b", "a:b"])
def test_other_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(accounts.AccountError, match="Unix account name"):
        accounts.check_unix_name(name, name)


def test_created_names_carry_the_prefix_and_the_prefix_counts_toward_the_limit() -> None:
    pol = accounts.CreatedAccounts("jupyter-", "/home", "/bin/bash")
    assert pol.account_name("alice") == "jupyter-alice"
    pol.check_name("a" * 24)
    with pytest.raises(accounts.AccountError):
        pol.check_name("a" * 25)


def test_modes_resolve_from_the_settings() -> None:
    root = os.geteuid() == 0
    assert accounts.resolve_mode(Config(accounts="auto")) == ("create" if root else "hub")
    assert accounts.resolve_mode(Config(accounts="hub")) == "hub"
    assert isinstance(accounts.policy(Config(accounts="hub")), accounts.HubAccount)
    with pytest.raises(ConfigError, match="must be one of"):
        accounts.resolve_mode(Config(accounts="ldap"))


async def test_the_privileged_account_is_never_used() -> None:
    unixaccounts.require_root()
    with pytest.raises(accounts.AccountError, match="never run as the privileged"):
        await accounts.ExistingAccounts().ensure("root")


def test_access_problem_finds_a_private_directory_on_the_way(tmp_path: Path) -> None:
    unixaccounts.require_root()
    nobody = accounts.Account.from_pwd(pwd.getpwnam("nobody"))
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    script = private / "tool"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    problem = accounts.access_problem(nobody, str(script))
    assert problem is not None and "not accessible to the account nobody" in problem
    assert accounts.access_problem(nobody, "/bin/sh") is None
    world = unixaccounts.world_dir()
    try:
        interp = world / "interp"
        interp.write_text("#!/bin/sh\n")
        interp.chmod(0o700)  # the script is fine, its interpreter is not
        tool = world / "tool"
        tool.write_text(f"#!{interp}\n")
        tool.chmod(0o755)
        problem = accounts.access_problem(nobody, str(tool))
        assert problem is not None and str(interp) in problem
    finally:
        shutil.rmtree(world)


def test_the_single_user_command_is_found_next_to_the_hubs_python() -> None:
    found = resolve_command(["himalia-singleuser", "--x"], path="/nonexistent")
    assert found == [str(Path(sys.executable).with_name("himalia-singleuser")), "--x"]
    assert resolve_command(["/opt/x/server"], path="") == ["/opt/x/server"]
    assert resolve_command(["sh"], path="/bin") == ["/bin/sh"]
    assert resolve_command(["no-such-cmd"], path="/bin") == ["no-such-cmd"]


def test_home_expansion_uses_the_accounts_home() -> None:
    assert expand_home("~/notebooks", "/home/jupyter-a") == "/home/jupyter-a/notebooks"
    assert expand_home("~", "/home/b") == "/home/b"
    assert expand_home("/srv/nb", "/home/b") == "/srv/nb"


@pytest.mark.parametrize(("text", "value"), [("512M", 512 << 20), ("2G", 2 << 30),
                                              ("1.5GiB", 3 << 29), ("67108864", 64 << 20)])
def test_sizes(text: str, value: int) -> None:
    assert cgroups.parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "1X", "-1G", "1K"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        cgroups.parse_size(text)


def test_bad_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="mem_limit"):
        cgroups.Limits.from_config(Config(mem_limit="much"))
    assert cgroups.manager(Config()) is None
    assert cgroups.human_size(300 << 20) == "300 MiB"


# --- end to end -------------------------------------------------------------------------------
def _as(account: pwd.struct_passwd, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
            "--init-groups", "--", *argv]


def test_a_hub_without_root_keeps_one_account_and_says_so(tmp_path: Path) -> None:
    with unixaccounts.accounts("op") as (_prefix, [op]):
        world = unixaccounts.world_dir()
        try:
            data = world / "data"
            os.chown(world, op.pw_uid, op.pw_gid)
            hub = [sys.executable, "-m", "hub", "--data-dir", str(data), "--port", "0",
                   "--hub-port", "0", "--proxy-api-port", "0"]
            env = {"PATH": "/usr/bin:/bin", "HOME": op.pw_dir, "LANG": "C.UTF-8"}
            refused = subprocess.run(_as(op, [*hub, "--accounts", "create"]), env=env,
                                     capture_output=True, text=True, timeout=60, cwd=world)
            assert refused.returncode == 1
            assert "needs the hub to run as root" in refused.stderr
            proc = subprocess.Popen(_as(op, hub), env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, cwd=world)
            lines: list[str] = []
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line)
                    if "hub listening on" in line:
                        break
                text = "".join(lines)
                assert text.count("accounts = 'hub': every user's server runs as the hub's "
                                  "own account") == 1, text
            finally:
                proc.terminate()
                proc.wait(15)
                if proc.stdout is not None:
                    proc.stdout.close()
                record = data / "proxy.json"
                if record.exists():
                    import json

                    _kill_group(int(json.loads(record.read_text())["pid"]))
        finally:
            shutil.rmtree(world, ignore_errors=True)


def test_first_admin_password_file_goes_once_changed(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "data")
    try:
        hub.start()
        file = tmp_path / "data" / "admin-password"
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        printed = re.search(r"username 'admin', password (\S+)", hub.log_text())
        assert printed and file.read_text().strip() == printed.group(1)
        done = hub.cli("users", "passwd", "admin", stdin="a new long password\n")
        assert done.returncode == 0, done.stderr
        assert "removed" in done.stdout and not file.exists()
        hub.stop()
        hub.start()
        assert not file.exists()
        hub.login("admin", "a new long password")
    finally:
        hub.cleanup()


def test_first_admin_password_file_can_be_off(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "data", extra_args=["--no-admin-password-file"])
    try:
        hub.start()
        assert "username 'admin', password" in hub.log_text()
        assert not (tmp_path / "data" / "admin-password").exists()
    finally:
        hub.cleanup()


async def test_a_server_killed_for_its_memory_says_so(tmp_path: Path) -> None:
    """The server process itself over ``mem_limit``: the kernel kills it, and the spawner's
    exit reason (shown on the home page) says why; its cgroup is gone after stop()."""
    import asyncio

    from hub.services.local_spawner import LocalProcessSpawner

    unixaccounts.require_root()
    hog = "import time; b = b'x' * (200 << 20); time.sleep(30)"
    cfg = Config(data_dir=str(tmp_path / "data"), accounts="hub", mem_limit="64M",
                 singleuser_cmd=[sys.executable, "-c", hog])
    sp = LocalProcessSpawner(cfg, "alice", hub_api_url="http://127.0.0.1:1/hub/api")
    sp.api_token = "t"
    await sp.start()
    group = cgroups.manager(cfg)
    assert group is not None and sp.cgroup is not None
    dirs = group.group(sp.cgroup).dirs
    try:
        for _ in range(200):
            if await sp.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert await sp.poll() == -9
        assert sp.exit_reason() == \
            "the server ran out of memory (limit 64 MiB) and was stopped by the kernel"
    finally:
        await sp.stop(now=True)
    assert not any(d.exists() for d in dirs)
