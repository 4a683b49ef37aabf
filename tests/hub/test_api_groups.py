"""``/hub/api/groups``: every endpoint, each error code, scope boundaries, escalation checks."""

from __future__ import annotations

from urllib.parse import quote

from tests.hub.apitools import err, grant_role, unique
from tests.hubproc import HubProcess

PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}


def _group(hub: HubProcess, *members: str, name: str | None = None) -> str:
    name = name or unique("g")
    r = hub.api("POST", f"/groups/{name}", json={"users": list(members)})
    assert r.status_code == 201, r.text
    return name


def test_create_read_delete(hub: HubProcess) -> None:
    alice, _ = hub.new_user("alice")
    name = unique("grp")
    r = hub.api("POST", f"/groups/{name}", json={"users": [alice.upper()],
                                                 "properties": {"course": "x101"}})
    assert r.status_code == 201, r.text
    assert r.json() == {"kind": "group", "name": name, "users": [alice], "roles": [],
                        "properties": {"course": "x101"}}
    err(hub.api("POST", f"/groups/{name}"), 409)
    assert hub.api("GET", f"/groups/{name}").json()["users"] == [alice]
    assert name in hub.api("GET", f"/users/{alice}").json()["groups"]
    assert hub.api("DELETE", f"/groups/{name}").status_code == 204
    err(hub.api("GET", f"/groups/{name}"), 404)
    err(hub.api("DELETE", f"/groups/{name}"), 404)
    assert hub.api("GET", f"/users/{alice}").status_code == 200  # members stay


def test_create_errors(hub: HubProcess) -> None:
    err(hub.api("POST", "/groups/" + quote(" lead")), 400)
    err(hub.api("POST", "/groups/" + quote("a\u0007b")), 400)
    err(hub.api("POST", f"/groups/{unique('g')}", json={"users": ["nobody-at-all"]}), 400)
    err(hub.api("POST", f"/groups/{unique('g')}", json={"users": "alice"}), 400)
    err(hub.api("POST", f"/groups/{unique('g')}", json={"users": [1]}), 400)
    err(hub.api("POST", f"/groups/{unique('g')}", json={"colour": "red"}), 400)
    err(hub.api("POST", f"/groups/{unique('g')}", data=b"[]"), 400)


def test_bulk_create(hub: HubProcess) -> None:
    bob, _ = hub.new_user("bob")
    names = [unique("bulk") for _ in range(3)]
    r = hub.api("POST", "/groups", json={"groups": names, "users": [bob]})
    assert r.status_code == 201, r.text
    assert sorted(g["name"] for g in r.json()) == sorted(names)
    assert all(g["users"] == [bob] for g in r.json())
    # all or nothing: one existing name fails the whole request
    fresh = unique("bulk")
    err(hub.api("POST", "/groups", json={"groups": [fresh, names[0]]}), 409)
    err(hub.api("GET", f"/groups/{fresh}"), 404)
    err(hub.api("POST", "/groups", json={"groups": []}), 400)
    err(hub.api("POST", "/groups", json={"groups": [fresh, fresh]}), 400)
    err(hub.api("POST", "/groups", json={}), 400)
    err(hub.api("POST", "/groups", json={"groups": [fresh], "users": ["no-such-user-x"]}), 400)


def test_list_and_pagination(hub: HubProcess) -> None:
    made = [_group(hub) for _ in range(3)]
    listed = hub.api("GET", "/groups", params={"limit": 200}).json()
    assert isinstance(listed, list) and {g["name"] for g in listed} >= set(made)
    page = hub.api("GET", "/groups", params={"limit": 2}, headers=PAGINATED).json()
    assert len(page["items"]) == 2 and page["_pagination"]["total"] >= 3
    assert page["_pagination"]["next"]["offset"] == 2
    past = hub.api("GET", "/groups", params={"offset": 10_000}, headers=PAGINATED).json()
    assert past["items"] == [] and past["_pagination"]["next"] is None
    err(hub.api("GET", "/groups", params={"limit": "x"}), 400)


def test_members(hub: HubProcess) -> None:
    a, _ = hub.new_user("mem")
    b, _ = hub.new_user("mem")
    name = _group(hub, a)
    r = hub.api("POST", f"/groups/{name}/users", json={"users": [b, a]})
    assert r.status_code == 200 and r.json()["users"] == sorted([a, b])
    r = hub.api("DELETE", f"/groups/{name}/users", json={"users": [a]})
    assert r.status_code == 200 and r.json()["users"] == [b]
    assert hub.api("DELETE", f"/groups/{name}/users", json={"users": [a]}).status_code == 200
    err(hub.api("POST", f"/groups/{name}/users", json={"users": ["nobody-here"]}), 400)
    err(hub.api("POST", f"/groups/{name}/users", json={}), 400)
    err(hub.api("DELETE", f"/groups/{name}/users"), 400)
    err(hub.api("POST", f"/groups/{unique('none')}/users", json={"users": [a]}), 404)


def test_properties(hub: HubProcess) -> None:
    name = _group(hub)
    r = hub.api("PUT", f"/groups/{name}/properties", json={"a": [1, 2], "b": {"c": None}})
    assert r.status_code == 200 and r.json()["properties"] == {"a": [1, 2], "b": {"c": None}}
    r = hub.api("PUT", f"/groups/{name}/properties", json={})
    assert r.json()["properties"] == {}
    err(hub.api("PUT", f"/groups/{name}/properties", json=[1]), 400)
    err(hub.api("PUT", f"/groups/{name}/properties"), 400)
    err(hub.api("PUT", f"/groups/{name}/properties", data=b"{bad"), 400)
    err(hub.api("PUT", f"/groups/{unique('none')}/properties", json={}), 404)


def test_read_scope_filtered_to_one_group(hub: HubProcess) -> None:
    a, b = _group(hub), _group(hub)
    token = hub.make_token("admin", f"read:groups!group={a}")
    assert hub.api("GET", f"/groups/{a}", token=token).json()["users"] == []
    err(hub.api("GET", f"/groups/{b}", token=token), 404)
    assert [g["name"] for g in hub.api("GET", "/groups", token=token).json()] == [a]
    err(hub.api("POST", f"/groups/{a}/users", token=token, json={"users": []}), 403)
    err(hub.api("POST", f"/groups/{b}/users", token=token, json={"users": []}), 404)
    err(hub.api("DELETE", f"/groups/{a}", token=token), 403)
    err(hub.api("POST", f"/groups/{unique('new')}", token=token), 403)


def test_filtered_admin_scope_never_creates(hub: HubProcess) -> None:
    a = _group(hub)
    new = unique("new")
    token = hub.make_token("admin", f"admin:groups!group={a}", f"admin:groups!group={new}")
    err(hub.api("POST", f"/groups/{new}", token=token), 403)
    err(hub.api("POST", "/groups", token=token, json={"groups": [new]}), 403)
    err(hub.api("POST", f"/groups/{a}", token=token), 403)  # not even a 409 leak
    member, _ = hub.new_user("f")
    r = hub.api("POST", f"/groups/{a}/users", token=token, json={"users": [member]})
    assert r.status_code == 200
    assert hub.api("DELETE", f"/groups/{a}", token=token).status_code == 204


def test_name_only_scope_trims_the_model(hub: HubProcess) -> None:
    member, _ = hub.new_user("t")
    name = _group(hub, member)
    token = hub.make_token("admin", "list:groups")
    assert {"kind": "group", "name": name} in hub.api("GET", "/groups", token=token,
                                                       params={"limit": 200}).json()
    assert hub.api("GET", f"/groups/{name}", token=token).json() == {"kind": "group",
                                                                     "name": name}


def test_plain_user_sees_no_groups(hub: HubProcess) -> None:
    user, _ = hub.new_user("plain")
    name = _group(hub, user)
    token = hub.make_token(user)
    err(hub.api("GET", "/groups", token=token), 403)
    err(hub.api("GET", f"/groups/{name}", token=token), 404)
    err(hub.api("POST", f"/groups/{name}/users", token=token, json={"users": [user]}), 404)
    err(hub.api("POST", f"/groups/{unique('mine')}", token=token), 403)
    assert hub.api("GET", f"/users/{user}", token=token).json()["groups"] == [name]


def test_group_managers_cannot_escalate(hub: HubProcess) -> None:
    """SECURITY.md 9: no self-service membership, no granting scopes one does not hold."""
    manager, _ = hub.new_user("mgr")
    other, _ = hub.new_user("oth")
    staff = _group(hub)
    grant_role(hub, unique("manage"), [f"groups!group={staff}"], users=(manager,))
    token = hub.make_token(manager)
    err(hub.api("POST", f"/groups/{staff}/users", token=token, json={"users": [manager]}), 403)
    r = hub.api("POST", f"/groups/{staff}/users", token=token, json={"users": [other]})
    assert r.status_code == 200 and other in r.json()["users"]
    # once the group carries a powerful role, its manager may no longer add members...
    grant_role(hub, unique("power"), ["admin:users"], groups=(staff,))
    third, _ = hub.new_user("thd")
    msg = err(hub.api("POST", f"/groups/{staff}/users", token=token, json={"users": [third]}),
              403)
    assert "admin:users" in msg
    # ...but may still remove them; an admin may add anyone, themselves included
    r = hub.api("DELETE", f"/groups/{staff}/users", token=token, json={"users": [other]})
    assert r.status_code == 200
    r = hub.api("POST", f"/groups/{staff}/users", json={"users": ["admin", third]})
    assert r.status_code == 200
    assert hub.api("DELETE", f"/groups/{staff}/users", json={"users": ["admin"]}).ok
