"""Spawn profiles: presets a user picks from, with some fields the user chooses, as JSON Schema.

Declared in the config file (``[[profiles]]``, any spawner)::

    [[profiles]]
    name = "gpu"                        # [a-z0-9_-], unique
    display_name = "GPU node"           # optional
    description = "One GPU, up to 8 h"  # optional
    groups = ["gpu-users"]              # who may use it (absent or empty: everyone)
    [profiles.options]                  # fixed values, e.g. partition, cpus, memory, qos
    partition = "gpu"
    [profiles.choices.walltime]         # user-choosable: walltime in minutes
    minimum = 10
    maximum = 480
    default = 60
    [profiles.choices.gpus]             # GPUs 0..N
    maximum = 2
    [profiles.choices.partition]        # one of a list
    enum = ["gpu", "gpu-long"]

A choice's table is a JSON Schema fragment (``enum``, ``minimum``, ``maximum``, ``default``,
``title``, ``description``); its type comes from the field (:data:`FIELDS`). :func:`schema_for`
is the JSON Schema of what one user may send — ``{"profile": <name>, <choice>: value, ...}``,
nothing else — and :func:`resolve` validates a request against it (the browser form and REST
``user_options`` alike) and returns the options the spawner gets: the profile's fixed options,
the choices (defaults filled in) and ``profile``. Pure logic: no database, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

#: Fields a profile may let users choose, and their JSON Schema base.
FIELDS: dict[str, dict[str, Any]] = {
    "partition": {"type": "string", "title": "Partition"},
    "account": {"type": "string", "title": "Account"},
    "qos": {"type": "string", "title": "Quality of service"},
    "reservation": {"type": "string", "title": "Reservation"},
    "walltime": {"type": "integer", "minimum": 1, "title": "Walltime (minutes)"},
    "cpus": {"type": "integer", "minimum": 1, "title": "CPUs"},
    "memory": {"type": "string", "title": "Memory"},
    "gpus": {"type": "integer", "minimum": 0, "title": "GPUs"},
}
#: Keys of a choice table an operator may set.
CHOICE_KEYS = frozenset({"enum", "minimum", "maximum", "default", "title", "description"})
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class ProfileError(ValueError):
    """A request the profiles do not allow; ``field`` names the offending field (safe to show)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    description: str
    groups: frozenset[str]
    options: dict[str, Any]
    choices: dict[str, dict[str, Any]]  # field → its JSON Schema

    def allowed(self, groups: Iterable[str]) -> bool:
        return not self.groups or bool(self.groups & set(groups))

    def defaults(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, schema in self.choices.items():
            if "default" in schema:
                out[field] = schema["default"]
            elif "enum" in schema:
                out[field] = schema["enum"][0]
            elif "minimum" in schema:
                out[field] = schema["minimum"]
        return out


def parse(tables: Iterable[Mapping[str, Any]]) -> list[Profile]:
    """The ``profiles`` setting as :class:`Profile` objects; raises ValueError (for the
    operator) on a malformed table."""
    out: list[Profile] = []
    for i, table in enumerate(tables):
        name = str(table.get("name", ""))
        if not NAME.fullmatch(name) or any(p.name == name for p in out):
            raise ValueError(f"profiles[{i}]: a unique name of a-z, 0-9, _ and - is required")
        unknown = set(table) - {"name", "display_name", "description", "groups", "options",
                                "choices"}
        if unknown:
            raise ValueError(f"profiles[{i}] ({name}): unknown keys {sorted(unknown)}")
        choices: dict[str, dict[str, Any]] = {}
        for field, spec in dict(table.get("choices", {})).items():
            if field not in FIELDS or not isinstance(spec, Mapping) or \
                    set(spec) - CHOICE_KEYS:
                raise ValueError(f"profiles[{i}] ({name}): choice {field!r} must be one of "
                                 f"{sorted(FIELDS)} with keys from {sorted(CHOICE_KEYS)}")
            choices[field] = {**FIELDS[field], **dict(spec)}
            try:
                Draft202012Validator.check_schema(choices[field])
            except SchemaError as e:
                raise ValueError(f"profiles[{i}] ({name}): choice {field!r}: {e.message}") \
                    from None
        options = dict(table.get("options", {}))
        clash = set(options) & set(choices)
        if clash:
            raise ValueError(f"profiles[{i}] ({name}): {sorted(clash)} both fixed and chosen")
        out.append(Profile(name, str(table.get("display_name") or name),
                           str(table.get("description", "")),
                           frozenset(str(g) for g in table.get("groups", []) or []),
                           options, choices))
    return out


def available(profiles: Iterable[Profile], groups: Iterable[str]) -> list[Profile]:
    groups = set(groups)
    return [p for p in profiles if p.allowed(groups)]


def schema_for(profiles: Iterable[Profile], groups: Iterable[str]) -> dict[str, Any]:
    """The JSON Schema of the options a member of ``groups`` may send."""
    mine = available(profiles, groups)
    branches = []
    for p in mine:
        properties: dict[str, Any] = {"profile": {"const": p.name}, **p.choices}
        branches.append({"title": p.display_name, "description": p.description,
                         "type": "object", "properties": properties,
                         "required": ["profile"], "additionalProperties": False})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Spawn options",
        "type": "object",
        "properties": {"profile": {"enum": [p.name for p in mine], "title": "Profile"}},
        "oneOf": branches,
    }


def resolve(profiles: list[Profile], groups: Iterable[str],
            request: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``request`` (``{"profile": ..., <choices>}``; an empty one means the first
    profile the user may use, with its defaults) and return the spawner's options. Raises
    :class:`ProfileError` naming the field."""
    groups = set(groups)
    mine = available(profiles, groups)
    if not mine:
        raise ProfileError("profile", "no profile is available to you")
    data = dict(request)
    name = data.get("profile", mine[0].name if not data else None)
    if name is None:
        raise ProfileError("profile", "is required")
    profile = next((p for p in profiles if p.name == name), None)
    if profile is None:
        raise ProfileError("profile", f"unknown profile {name!r}")
    if not profile.allowed(groups):
        raise ProfileError("profile", f"you may not use the profile {name!r}")
    data["profile"] = name
    branch = schema_for([profile], groups)["oneOf"][0]
    errors = list(Draft202012Validator(branch).iter_errors(data))
    if errors:
        raise _field_error(best_match(errors))
    return {**profile.options, **profile.defaults(), **data}


def _field_error(error: ValidationError) -> ProfileError:
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        field = extra[0] if extra else ""
        return ProfileError(field, "is not an option of this profile")
    field = str(error.path[0]) if error.path else ""
    return ProfileError(field, error.message)


def from_form(profiles: list[Profile], form: Mapping[str, str]) -> dict[str, Any]:
    """A request from the spawn form's fields (``profile`` and ``<profile>.<field>``), typed
    as the schema says (an integer field that is not one stays a string, and fails)."""
    name = form.get("profile", "")
    profile = next((p for p in profiles if p.name == name), None)
    out: dict[str, Any] = {"profile": name}
    if profile is None:
        return out
    for field, schema in profile.choices.items():
        raw = form.get(f"{name}.{field}")
        if raw is None or raw == "":
            continue
        if schema.get("type") == "integer":
            out[field] = int(raw) if re.fullmatch(r"-?\d{1,9}", raw.strip()) else raw
        else:
            out[field] = raw
    return out
