"""The ``himalia`` command, in-process through ``main([...])`` on a temporary data directory.

Plus one run of the real console script in a subprocess, one against PostgreSQL, and one next
to a running hub. Every expected error must exit non-zero with a one-line message on stderr
and no traceback; passwords never appear in the output.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from hub.cli import main
from hub.config import OPTIONS, Config
from hub.db import database
from hub.db.database import make_engine, make_sessionmaker, transaction
from hub.db.models import APIToken, Server, User, utcnow
from hub.services import auth, tokens
from tests.hub.test_db import PG_URL, newer_migrations, pg_schema_url
from tests.hubproc import HubProcess

PASSWORD = "correct horse 1"
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


class FakeStdin(io.StringIO):
    """Standard input with a chosen answer to ``isatty()``."""

    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@dataclass
class Result:
    code: int
    out: str
    err: str


class CLI:
    """Runs ``main`` with a given stdin and captures its output; reads the database."""

    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.data_dir = data_dir
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, stdin: str = "", tty: bool = False) -> Result:
        self.monkeypatch.setattr(sys, "stdin", FakeStdin(stdin, tty))
        code = main(list(args))
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err
        if code != 0 and err:  # one message, after any prompt or usage text
            assert re.search(r"himalia( [a-z-]+)*: error: ", err.splitlines()[-1]), err
        return Result(code, out, err)

    def ok(self, *args: str, stdin: str = "", tty: bool = False) -> Result:
        res = self(*args, stdin=stdin, tty=tty)
        assert res.code == 0, res.err
        return res

    @contextmanager
    def db(self) -> Iterator[Session]:
        engine = make_engine(Config(data_dir=str(self.data_dir), db_url="").database_url)
        try:
            with transaction(make_sessionmaker(engine)) as session:
                yield session
        finally:
            engine.dispose()

    def user(self, name: str) -> User | None:
        with self.db() as session:
            return session.scalar(select(User).where(User.name == name))

    def names(self) -> list[str]:
        return [u["name"] for u in json.loads(self.ok("users", "list", "--json").out)]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HIMALIA_") and key != "HIMALIA_TEST_PG_URL":
            monkeypatch.delenv(key)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        clean_env: None) -> CLI:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("HIMALIA_DATA_DIR", str(data_dir))
    return CLI(data_dir, capsys, monkeypatch)


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], list[str]]:
    """Replace getpass with scripted answers; returns the list of prompts shown."""
    shown: list[str] = []

    def install(answers: list[str]) -> list[str]:
        replies = iter(answers)

        def fake_getpass(prompt: str = "") -> str:
            shown.append(prompt)
            return next(replies)

        monkeypatch.setattr("getpass.getpass", fake_getpass)
        return shown

    return install


# --- parsing, usage errors, help --------------------------------------------------------

def test_help_lists_every_command(cli: CLI) -> None:
    res = cli.ok("--help")
    for command in ("serve", "users", "token", "db", "config"):
        assert command in res.out
    assert "add" in cli.ok("users", "--help").out
    assert "--data-dir" in cli.ok("users", "add", "--help").out


@pytest.mark.parametrize("argv", [
    ["users"],
    ["users", "frobnicate"],
    ["users", "add"],
    ["users", "set-admin", "alice", "maybe"],
    ["token"],
    ["token", "alice", "--expires-in", "-5"],
    ["token", "alice", "--expires-in", "soon"],
    ["token", "alice", "--scopes", "read:users,no-such-scope"],
    ["token", "alice", "--scopes", ","],
    ["db"],
    ["db", "downgrade"],
    ["no-such-command"],
    ["users", "list", "--port", "1"],  # hub-only flags are not taken by subcommands
    ["users", "list", "--data"],  # no abbreviations: flag names are public API
])
def test_usage_errors_exit_2(cli: CLI, argv: list[str]) -> None:
    res = cli(*argv)
    assert res.code == 2
    assert "error:" in res.err
    assert res.out == ""


def test_bad_setting_exits_2(cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HIMALIA_TOKEN_MAX_AGE_DAYS", "forever")
    res = cli("users", "list")
    assert res.code == 2 and "token_max_age_days" in res.err
    monkeypatch.delenv("HIMALIA_TOKEN_MAX_AGE_DAYS")
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    res = cli("users", "list", "--config", str(bad))
    assert res.code == 2 and "no_such_setting" in res.err


def test_version(cli: CLI) -> None:
    assert cli.ok("--version").out.startswith("himalia ")


# --- users add / list -------------------------------------------------------------------

def test_add_and_list(cli: CLI) -> None:
    res = cli.ok("users", "add", "alice", " Bob ")
    assert res.out.splitlines() == ["added user alice", "added user bob"]
    assert "users passwd alice" in res.err  # native accounts without a password are noted
    rows = json.loads(cli.ok("users", "list", "--json").out)
    assert [r["name"] for r in rows] == ["alice", "bob"]
    for row in rows:
        assert set(row) == {"name", "admin", "created", "last_activity", "running"}
        assert row["admin"] is False and row["running"] is False
        assert row["last_activity"] is None
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", row["created"])
    user = cli.user("alice")
    assert user is not None and user.password_hash is None


def test_list_table(cli: CLI) -> None:
    assert cli.ok("users", "list").out.split() == [
        "NAME", "ADMIN", "CREATED", "(UTC)", "LAST", "ACTIVITY", "RUNNING"]
    cli.ok("users", "add", "alice")
    cli.ok("users", "add", "root", "--admin")
    with cli.db() as session:
        alice = session.scalar(select(User).where(User.name == "alice"))
        assert alice is not None
        alice.last_activity = utcnow()
        session.add(Server(user=alice, name="", started=utcnow()))
    lines = cli.ok("users", "list").out.splitlines()
    assert lines[0].split()[0] == "NAME"
    alice_row, root_row = lines[1].split(), lines[2].split()
    assert alice_row[0] == "alice" and alice_row[1] == "no" and alice_row[-1] == "yes"
    assert root_row[0] == "root" and root_row[1] == "yes" and root_row[-1] == "no"
    assert root_row[4] == "-"  # never active
    running = {r["name"]: r["running"] for r in json.loads(cli.ok("users", "list",
                                                                   "--json").out)}
    assert running == {"alice": True, "root": False}
    assert json.loads(cli.ok("users", "list", "--json").out)[0]["last_activity"].endswith("Z")


def test_add_admins_with_one_password(cli: CLI) -> None:
    res = cli.ok("users", "add", "ann", "bo", "--admin", "--password-stdin",
                 stdin=PASSWORD + "\n")
    assert res.out.splitlines() == ["added admin ann", "added admin bo"]
    assert PASSWORD not in res.out + res.err
    hashes = []
    for name in ("ann", "bo"):
        user = cli.user(name)
        assert user is not None and user.admin
        assert auth.check_password(PASSWORD, user.password_hash)
        hashes.append(user.password_hash)
    assert hashes[0] != hashes[1]  # one salt per user


def test_add_password_prompted_on_a_terminal(
    cli: CLI, prompts: Callable[[list[str]], list[str]]
) -> None:
    shown = prompts([PASSWORD, PASSWORD])
    cli.ok("users", "add", "ann", "--password-stdin", tty=True)
    assert len(shown) == 2
    user = cli.user("ann")
    assert user is not None and auth.check_password(PASSWORD, user.password_hash)


@pytest.mark.parametrize(("argv", "stdin", "message"), [
    (["alice"], "", "already exist"),
    (["new1", "alice"], "", "already exist"),
    (["carol", "Carol"], "", "duplicate"),
    (["a/b"], "", "slash"),
    (["ok", "\t"], "", "empty"),
    (["x" * 256], "", "255"),
    (["dan", "--password-stdin"], "short\n", "at least 8"),
    (["dan", "--password-stdin"], "", "standard input"),
])
def test_add_errors_create_nobody(cli: CLI, argv: list[str], stdin: str, message: str) -> None:
    cli.ok("users", "add", "alice")
    res = cli("users", "add", *argv, stdin=stdin)
    assert res.code == 1
    assert message in res.err
    assert res.out == ""
    assert cli.names() == ["alice"]


def test_passwords_refused_when_the_authenticator_checks_its_own(
    cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIMALIA_AUTHENTICATOR", "dummy")
    res = cli("users", "add", "ann", "--password-stdin", stdin=PASSWORD + "\n")
    assert res.code == 1 and "native" in res.err
    cli.ok("users", "add", "ann")
    res = cli("users", "passwd", "ann", stdin=PASSWORD + "\n")
    assert res.code == 1 and "native" in res.err


# --- users remove / set-admin / passwd --------------------------------------------------

def test_remove(cli: CLI) -> None:
    cli.ok("users", "add", "alice", "bob", "carol")
    cli.ok("token", "alice")
    res = cli.ok("users", "remove", "alice", "Bob", "--yes")
    assert res.out.splitlines() == ["removed user alice", "removed user bob"]
    assert cli.names() == ["carol"]
    with cli.db() as session:
        assert session.scalars(select(APIToken)).all() == []


def test_remove_is_all_or_nothing(cli: CLI) -> None:
    cli.ok("users", "add", "alice")
    res = cli("users", "remove", "alice", "nobody", "--yes")
    assert res.code == 1 and "no such user: nobody" in res.err
    assert cli.names() == ["alice"]


def test_remove_asks_on_a_terminal_only(cli: CLI) -> None:
    cli.ok("users", "add", "alice", "bob")
    res = cli("users", "remove", "alice")
    assert res.code == 2 and "--yes" in res.err
    res = cli("users", "remove", "alice", stdin="n\n", tty=True)
    assert res.code == 1 and "Remove alice" in res.err
    assert cli.names() == ["alice", "bob"]
    cli.ok("users", "remove", "alice", stdin="y\n", tty=True)
    assert cli.names() == ["bob"]


def test_remove_refuses_users_with_running_servers(cli: CLI) -> None:
    cli.ok("users", "add", "alice")
    with cli.db() as session:
        alice = session.scalar(select(User).where(User.name == "alice"))
        session.add(Server(user=alice, name="", started=utcnow()))
    res = cli("users", "remove", "alice", "--yes")
    assert res.code == 1 and "running server" in res.err
    assert cli.names() == ["alice"]


def test_set_admin(cli: CLI) -> None:
    cli.ok("users", "add", "alice")
    assert cli.ok("users", "set-admin", "Alice", "on").out.strip() == "alice is now an admin"
    assert (u := cli.user("alice")) is not None and u.admin
    assert "no longer" in cli.ok("users", "set-admin", "alice", "off").out
    assert (u := cli.user("alice")) is not None and not u.admin
    res = cli("users", "set-admin", "nobody", "on")
    assert res.code == 1 and "no such user: nobody" in res.err


def test_passwd_from_stdin(cli: CLI) -> None:
    cli.ok("users", "add", "alice")
    res = cli.ok("users", "passwd", "alice", stdin=PASSWORD + "\r\n")
    assert PASSWORD not in res.out + res.err
    user = cli.user("alice")
    assert user is not None and auth.check_password(PASSWORD, user.password_hash)
    res = cli("users", "passwd", "alice", stdin="x" * 73 + "\n")
    assert res.code == 1 and "72 bytes" in res.err


def test_passwd_prompts_twice_on_a_terminal(
    cli: CLI, prompts: Callable[[list[str]], list[str]]
) -> None:
    cli.ok("users", "add", "alice")
    shown = prompts([PASSWORD, PASSWORD + "typo"])
    res = cli("users", "passwd", "alice", tty=True)
    assert res.code == 1 and "do not match" in res.err
    assert len(shown) == 2
    assert (u := cli.user("alice")) is not None and u.password_hash is None
    prompts([PASSWORD, PASSWORD])
    cli.ok("users", "passwd", "alice", tty=True)
    assert (u := cli.user("alice")) is not None
    assert auth.check_password(PASSWORD, u.password_hash)


def test_passwd_checks_the_user_before_asking(
    cli: CLI, prompts: Callable[[list[str]], list[str]]
) -> None:
    cli.ok("users", "list")
    shown = prompts([])
    res = cli("users", "passwd", "nobody", tty=True)
    assert res.code == 1 and "no such user" in res.err
    assert shown == []


# --- token --------------------------------------------------------------------------------

def test_token_prints_only_the_token(cli: CLI) -> None:
    cli.ok("users", "add", "alice")
    res = cli.ok("token", "alice", "--note", "for CI", "--expires-in", "60",
                 "--scopes", "read:users, self")
    secret = res.out.strip()
    assert res.out == secret + "\n" and TOKEN_RE.fullmatch(secret)
    with cli.db() as session:
        found = tokens.lookup(session, secret)
        row = session.scalar(select(APIToken))
        alice = session.scalar(select(User).where(User.name == "alice"))
    assert found is not None and alice is not None and row is not None
    assert found.user_id == alice.id and found.kind == "api"
    assert found.scopes == ("read:users", "self")
    assert row.note == "for CI"
    assert row.expires_at is not None
    assert abs(row.expires_at - (utcnow() + timedelta(seconds=60))) < timedelta(seconds=10)


def test_token_defaults(cli: CLI) -> None:
    cli.ok("users", "add", "alice")
    secret = cli.ok("token", "alice").out.strip()
    with cli.db() as session:
        found = tokens.lookup(session, secret)
    assert found is not None and found.scopes == ("inherit",) and found.expires_at is None


def test_token_lifetime_capped_by_setting(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIMALIA_TOKEN_MAX_AGE_DAYS", "1")
    cli.ok("users", "add", "alice")
    res = cli.ok("token", "alice", "--expires-in", "999999")
    assert "token_max_age_days" in res.err
    with cli.db() as session:
        found = tokens.lookup(session, res.out.strip())
    assert found is not None and found.expires_at is not None
    assert found.expires_at - utcnow() <= timedelta(days=1)


def test_token_for_unknown_user(cli: CLI) -> None:
    res = cli("token", "nobody")
    assert res.code == 1 and "no such user: nobody" in res.err and res.out == ""


# --- db, config, serve ---------------------------------------------------------------------

def test_db_status_and_upgrade(cli: CLI, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    res = cli.ok("db", "status")
    assert "does not exist yet" in res.out
    assert not cli.data_dir.exists()  # a status check creates nothing
    cli.ok("users", "add", "alice")
    assert "up to date" in cli.ok("db", "status").out
    assert "nothing to do" in cli.ok("db", "upgrade").out

    monkeypatch.setattr(database, "MIGRATIONS", newer_migrations(tmp_path))
    res = cli("db", "status")
    assert res.code == 1 and "outdated" in res.out and "himalia db upgrade" in res.out
    for argv in (["users", "list"], ["users", "add", "bob"], ["token", "alice"]):
        res = cli(*argv)
        assert res.code == 1 and "himalia db upgrade" in res.err and res.out == ""

    res = cli.ok("db", "upgrade")
    backup = Path(re.findall(r"backed up the database to (\S+)", res.out)[0])
    assert backup.exists() and backup.parent == cli.data_dir
    assert "to 9999" in res.out
    assert "up to date" in cli.ok("db", "status").out
    assert cli.names() == ["alice"]


def test_db_upgrade_creates_an_empty_database(cli: CLI) -> None:
    res = cli.ok("db", "upgrade")
    assert "backed up" not in res.out and "from revision none" in res.out
    assert "up to date" in cli.ok("db", "status").out


def test_db_upgrade_refuses_an_unknown_revision(cli: CLI) -> None:
    cli.ok("users", "add", "alice")
    with cli.db() as session:
        session.execute(text("UPDATE alembic_version SET version_num = 'abc123'"))
    res = cli("db", "upgrade")
    assert res.code == 1 and "cannot upgrade from revision abc123" in res.err
    assert "backed up" in res.out  # taken before trying


def test_db_upgrade_refuses_unversioned_tables(cli: CLI) -> None:
    cli.ok("users", "add", "alice")
    with cli.db() as session:
        session.execute(text("DELETE FROM alembic_version"))
    res = cli("db", "status")
    assert res.code == 1 and "outdated" in res.out
    res = cli("db", "upgrade")
    assert res.code == 1 and "no schema revision" in res.err


def test_database_errors_are_one_line(cli: CLI, tmp_path: Path) -> None:
    res = cli("users", "list", "--db-url", "postgresql://hub:s3cret-pw@127.0.0.1:1/nodb")
    assert res.code == 1 and res.err.startswith("himalia: error: database error")
    assert "s3cret-pw" not in res.err
    res = cli("users", "list", "--db-url", f"sqlite:///{tmp_path}/missing/dir/x.sqlite")
    assert res.code == 1 and "database error" in res.err
    res = cli("users", "list", "--db-url", "not a url")
    assert res.code == 2 and "invalid database URL" in res.err


def test_database_flags_before_or_after_the_command(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    cli.ok("--data-dir", str(other), "users", "add", "ann")
    cli.ok("users", "add", "bo", "--data-dir", str(other))
    listed = json.loads(cli.ok("users", "list", "--json", "--data-dir", str(other)).out)
    assert [r["name"] for r in listed] == ["ann", "bo"]
    assert cli.names() == []  # HIMALIA_DATA_DIR's database is a different one
    assert (other / "himalia.sqlite").exists()
    assert (other.stat().st_mode & 0o777) == 0o700

    config = tmp_path / "hub.toml"
    config.write_text(f"[himalia]\ndata_dir = {json.dumps(str(other))}\n")
    listed = json.loads(cli.ok("users", "list", "--json", "--config", str(config)).out)
    assert listed == []  # the environment beats the file
    monkeypatch.delenv("HIMALIA_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    listed = json.loads(cli.ok("users", "list", "--json", "--config", str(config)).out)
    assert [r["name"] for r in listed] == ["ann", "bo"]


def test_config_prints_every_setting(cli: CLI) -> None:
    out = cli.ok("config").out
    assert out.startswith("| setting |")
    for opt in OPTIONS:
        assert f"`{opt.name}`" in out and opt.env in out


@pytest.fixture
def fake_start(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Stand in for ``hub.start``: records the config it is run with, exits 3."""
    runs: list[Config] = []

    def run(cfg: Config) -> int:
        runs.append(cfg)
        return 3

    monkeypatch.setitem(sys.modules, "hub.start", types.SimpleNamespace(run=run))
    return runs


@pytest.mark.parametrize(("argv", "port"), [
    ([], 8000),
    (["--port", "9001"], 9001),
    (["serve"], 8000),
    (["serve", "--port", "9002"], 9002),
    (["--port", "9003", "serve"], 9003),
])
def test_serve_runs_the_hub(cli: CLI, fake_start: list[Config], argv: list[str],
                            port: int) -> None:
    assert cli(*argv).code == 3
    assert [cfg.port for cfg in fake_start] == [port]
    assert fake_start[0].data_path == cli.data_dir.resolve()


def test_serve_flag_beats_environment(cli: CLI, fake_start: list[Config],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIMALIA_PORT", "7000")
    monkeypatch.setenv("HIMALIA_LOG_LEVEL", "debug")
    assert cli("--port", "7001").code == 3
    assert (fake_start[0].port, fake_start[0].log_level) == (7001, "DEBUG")


def test_serve_reports_an_outdated_schema(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(cfg: Config) -> int:
        raise database.SchemaOutdated("database schema is old: run `himalia db upgrade`")

    monkeypatch.setitem(sys.modules, "hub.start", types.SimpleNamespace(run=run))
    res = cli("serve")
    assert res.code == 1 and "himalia db upgrade" in res.err


# --- real processes, PostgreSQL, documentation ---------------------------------------------

def test_console_script_in_a_subprocess(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "himalia"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIMALIA_")}
    env["HIMALIA_DATA_DIR"] = str(tmp_path / "data")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], input=stdin, capture_output=True,
                              text=True, env=env, timeout=60)

    done = run("users", "add", "carol", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "added admin carol\n"
    done = run("users", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["name"], r["admin"]) for r in rows] == [("carol", True)]
    done = run("users", "add", "carol")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "himalia: error: users already exist: carol\n"


@pytest.mark.postgres
def test_commands_on_postgresql(cli: CLI) -> None:
    if not PG_URL:
        pytest.skip("HIMALIA_TEST_PG_URL is not set (scripts/test-setup.sh starts PostgreSQL)")
    with pg_schema_url(PG_URL) as url:
        flags = ("--db-url", url)
        cli.ok("users", "add", "alice", "bob", "--admin", *flags)
        assert TOKEN_RE.fullmatch(cli.ok("token", "alice", *flags).out.strip())
        cli.ok("users", "set-admin", "bob", "off", *flags)
        cli.ok("users", "remove", "alice", "--yes", *flags)
        rows = json.loads(cli.ok("users", "list", "--json", *flags).out)
        assert [(r["name"], r["admin"]) for r in rows] == [("bob", False)]
        res = cli.ok("db", "status", *flags)
        assert "up to date" in res.out and "hubpw" not in res.out
        assert "nothing to do" in cli.ok("db", "upgrade", *flags).out
        assert cli("users", "add", "bob", *flags).code == 1
    assert not cli.data_dir.exists()


def test_cli_works_next_to_a_running_hub(make_hub: Callable[..., HubProcess], tmp_path: Path,
                                         clean_env: None) -> None:
    """Changes made by the CLI take effect in the running hub at once, and a removed
    user's token never authenticates anyone again, even a user created right after."""
    hub = make_hub(data_dir=tmp_path / "hubdata")
    name, _password = hub.new_user(prefix="cli")  # `himalia users add` in a subprocess
    token = hub.make_token(name)  # `himalia token`
    for _ in range(3):  # used a few times, so the hub has it cached
        me = hub.api("GET", "/user", token=token)
        assert me.status_code == 200 and me.json()["name"] == name
    assert hub.api("GET", "/users/admin", token=token).status_code in (403, 404)
    done = hub.cli("users", "set-admin", name, "on")
    assert done.returncode == 0, done.stderr
    assert hub.api("GET", "/users/admin", token=token).status_code == 200
    done = hub.cli("users", "remove", name, "--yes")
    assert done.returncode == 0, done.stderr
    assert hub.api("GET", f"/users/{name}").status_code == 404
    hub.new_user(prefix="new", admin=True)  # likely to get the removed user's old id
    me = hub.api("GET", "/user", token=token)
    assert me.status_code == 403, f"a removed user's token authenticated as {me.text[:80]}"
