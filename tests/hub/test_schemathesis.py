"""Property-based run of the whole REST API against a real hub: no input gives a 500.

Schemathesis reads the spec the hub serves (``GET /hub/api/spec``) and sends each operation
generated requests — valid and invalid parameters and bodies, unexpected methods — as an admin,
checking only ``not_a_server_error``. Bounded: a few examples per operation, no per-example
deadline, and a time budget for the whole run (examples past it pass without a request).

Requests go to the hub's own port, not through the proxy: this tests the hub. (A request with a
body that the hub refuses before reading it, e.g. ``TRACE`` answered 405, ends with the hub
closing the connection; through a proxy that can race into a reset and a proxy 503.)

Left out: operations with lasting effects beyond the API's own data — starting servers (real
processes; a failed spawn is a deliberate 500), ``/shutdown`` and ``PATCH /proxy`` — and, since
schemathesis reuses names and ids it saw in earlier responses, changes to the admin account
whose token drives the run.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from hub.services.names import normalize_username
from tests.hubproc import HubProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning"),
]

#: Seconds for each run (admin, user), counted from its first example.
BUDGET = 50.0
EXAMPLES = 15
_clock: dict[str, float] = {}


def _direct_api(hub: HubProcess) -> str:
    """The hub's API on its own port (see the module docstring)."""
    return hub.hub_url + hub.base_path + "hub/api"


@pytest.fixture(scope="module")
def api_schema(hub: HubProcess) -> Any:
    schema = schemathesis.openapi.from_url(_direct_api(hub) + "/spec")
    schema.config.update(base_url=_direct_api(hub), request_timeout=30)
    return schema


schema = (
    schemathesis.pytest.from_fixture("api_schema")
    .exclude(method="POST", path_regex=r"^/users/\{name\}/servers?(/\{server_name\})?$")
    .exclude(path="/shutdown")
    .exclude(method="PATCH", path="/proxy")
)


def _touches_admin(case: schemathesis.Case) -> bool:
    name = (case.path_parameters or {}).get("name")
    return (case.method.upper() in ("PATCH", "DELETE") and isinstance(name, str)
            and normalize_username(name) == "admin")


@pytest.fixture(scope="module")
def user_token(hub: HubProcess) -> str:
    """A plain user's token (role ``user``: only their own things)."""
    name, _ = hub.new_user("st")
    return hub.make_token(name)


def _run(case: schemathesis.Case, token: str, clock: str) -> None:
    start = _clock.setdefault(clock, time.monotonic())
    if time.monotonic() - start > BUDGET or _touches_admin(case):
        return
    case.call_and_validate(
        headers={"Authorization": f"token {token}"},
        checks=[not_a_server_error],
        timeout=30,
    )


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_no_server_errors_as_admin(case: schemathesis.Case, hub: HubProcess) -> None:
    _run(case, hub.admin_token, "admin")


@schema.parametrize()
@settings(max_examples=EXAMPLES // 2, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_no_server_errors_as_user(case: schemathesis.Case, user_token: str) -> None:
    """Scope boundaries (403/404 paths) with a token that may touch only its own user."""
    _run(case, user_token, "user")
