"""Loading extension classes (authenticators, spawners) named in the configuration."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def load_class(spec: str, builtin: Mapping[str, type[T]], base: type[T], what: str) -> type[T]:
    """``builtin[spec]``, or the ``base`` subclass at the ``module:Class``/dotted path ``spec``.

    Raises ValueError with a message for the operator.
    """
    if spec in builtin:
        return builtin[spec]
    module, _, attr = spec.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"cannot load {what} {spec!r}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{spec!r} is not a {base.__name__}")
    return cls
