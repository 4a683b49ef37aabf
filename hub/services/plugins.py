"""Loading extension classes (authenticators, spawners) named in the configuration, and
describing the loaded ones (``/hub/api/info``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import metadata
from typing import TypeVar

T = TypeVar("T")


def load_class(spec: str, builtin: Mapping[str, type[T]], base: type[T], what: str,
               also: Iterable[str] = ()) -> type[T]:
    """``builtin[spec]``, or the ``base`` subclass at the ``module:Class``/dotted path ``spec``.

    Raises ValueError with a message for the operator; a bare name that is not built in gets
    the list of built-in names (plus ``also``: built-in names the caller maps to paths).
    """
    if spec in builtin:
        return builtin[spec]
    module, _, attr = spec.replace(":", ".").rpartition(".")
    if not module or not attr:
        choices = ", ".join(sorted([*builtin, *also]))
        raise ValueError(f"unknown {what} {spec!r}: choose one of {choices}, or give a "
                         f"module.Class path")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"cannot load {what} {spec!r}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{spec!r} is not a {base.__name__}")
    return cls


def describe(cls: type) -> dict[str, str]:
    """``{"class": "module.QualName", "version": ...}``: the version of the installed
    distribution that provides the class's top-level package ("unknown" when none does)."""
    return {"class": f"{cls.__module__}.{cls.__qualname__}",
            "version": _version(cls.__module__.partition(".")[0])}


@cache
def _version(top_level: str) -> str:
    for dist in metadata.packages_distributions().get(top_level, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
