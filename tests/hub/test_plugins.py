"""Authenticator and spawner classes: loading by name or path, and how ``/hub/api/info``
describes them."""

from __future__ import annotations

import sys

import pytest

from hub import __version__
from hub.services import auth, plugins
from hub.services.local_spawner import LocalProcessSpawner
from hub.services.spawner import Spawner
from hub.services.wiring import StartupFailure, spawner_class
from tests.hubproc import HubProcess


def test_an_unknown_name_lists_the_choices() -> None:
    with pytest.raises(StartupFailure,
                       match=r"unknown spawner 'kubernetes': choose one of local, slurm"):
        spawner_class("kubernetes")
    with pytest.raises(ValueError, match=r"unknown authenticator 'kerberos': choose one of "
                                         r"dummy, ldap, native, oidc, pam"):
        auth.load_class("kerberos")


def test_paths_load_and_are_checked() -> None:
    path = "hub.services.local_spawner.LocalProcessSpawner"
    assert plugins.load_class(path, {}, Spawner, "spawner") is LocalProcessSpawner
    assert plugins.load_class(path.replace(".Local", ":Local"), {}, Spawner,
                              "spawner") is LocalProcessSpawner
    with pytest.raises(ValueError, match=r"cannot load spawner 'nowhere\.Thing'"):
        plugins.load_class("nowhere.Thing", {}, Spawner, "spawner")
    with pytest.raises(ValueError, match="is not a Spawner"):
        plugins.load_class("hub.services.auth.Authenticator", {}, Spawner, "spawner")


def test_describe_names_the_class_and_its_package_version() -> None:
    assert plugins.describe(LocalProcessSpawner) == {
        "class": "hub.services.local_spawner.LocalProcessSpawner", "version": __version__}
    import tornado

    assert plugins.describe(tornado.web.RequestHandler) == {
        "class": "tornado.web.RequestHandler", "version": tornado.version}


def test_info_reports_the_classes_in_use(hub: HubProcess) -> None:
    info = hub.api("GET", "/info").json()
    assert info["authenticator"]["class"] == "hub.services.auth.NativeAuthenticator"
    assert info["spawner"] == {"class": "hub.services.local_spawner.LocalProcessSpawner",
                               "version": __version__}
    assert info["himalia_version"] == __version__ and info["python"] == sys.version
