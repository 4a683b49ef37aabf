"""Spawn profiles: the JSON Schema per group, validation naming the field, defaults, the form."""

from __future__ import annotations

from typing import Any

import pytest

from hub.services import profiles

TABLES: list[dict[str, Any]] = [
    {"name": "cpu", "display_name": "CPU", "options": {"cpus": 2},
     "choices": {"walltime": {"minimum": 10, "maximum": 240, "default": 60},
                 "partition": {"enum": ["short", "long"]}}},
    {"name": "gpu", "groups": ["gpu"], "options": {"partition": "gpu"},
     "choices": {"gpus": {"minimum": 1, "maximum": 2}}},
]
FOUND = profiles.parse(TABLES)


def test_schema_lists_only_the_groups_profiles() -> None:
    assert profiles.schema_for(FOUND, [])["properties"]["profile"]["enum"] == ["cpu"]
    schema = profiles.schema_for(FOUND, ["gpu"])
    assert schema["properties"]["profile"]["enum"] == ["cpu", "gpu"]
    gpus = schema["oneOf"][1]["properties"]["gpus"]
    assert gpus == {"type": "integer", "minimum": 1, "maximum": 2, "title": "GPUs"}


def test_resolve_fills_fixed_options_and_defaults() -> None:
    assert profiles.resolve(FOUND, [], {}) == {"profile": "cpu", "cpus": 2, "walltime": 60,
                                               "partition": "short"}
    assert profiles.resolve(FOUND, ["gpu"], {"profile": "gpu", "gpus": 2}) == {
        "profile": "gpu", "partition": "gpu", "gpus": 2}


@pytest.mark.parametrize(("groups", "request_", "field"), [
    ([], {"profile": "cpu", "walltime": 241}, "walltime"),
    ([], {"profile": "cpu", "walltime": True}, "walltime"),
    ([], {"profile": "cpu", "partition": "gpu"}, "partition"),
    ([], {"profile": "cpu", "cpus": 8}, "cpus"),  # fixed, not choosable
    ([], {"profile": "gpu", "gpus": 1}, "profile"),  # not in the group
    (["gpu"], {"profile": "gpu", "gpus": 3}, "gpus"),
    ([], {"walltime": 30}, "profile"),
    ([], {"profile": "nope"}, "profile"),
])
def test_bad_requests_name_the_field(groups: list[str], request_: dict[str, Any],
                                     field: str) -> None:
    with pytest.raises(profiles.ProfileError) as info:
        profiles.resolve(FOUND, groups, request_)
    assert info.value.field == field


def test_form_fields_are_typed_by_the_schema() -> None:
    form = {"profile": "cpu", "cpu.walltime": "90", "cpu.partition": "long", "gpu.gpus": "2"}
    assert profiles.from_form(FOUND, form) == {"profile": "cpu", "walltime": 90,
                                               "partition": "long"}
    with pytest.raises(profiles.ProfileError, match="walltime"):
        profiles.resolve(FOUND, [], profiles.from_form(FOUND, {"profile": "cpu",
                                                               "cpu.walltime": "1h"}))


@pytest.mark.parametrize("table", [
    {"name": "Bad Name"},
    {"name": "x", "choices": {"nodes": {}}},
    {"name": "x", "choices": {"walltime": {"maximum": "lots"}}},
    {"name": "x", "options": {"cpus": 1}, "choices": {"cpus": {}}},
    {"name": "x", "colour": "red"},
])
def test_malformed_profiles_are_refused(table: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"profiles\[0\]"):
        profiles.parse([table])
